//! The heartbeat hot path allocates nothing, for a known id or an unknown one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vigil::{Config, Coordinator, RegisterRequest};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[tokio::test(flavor = "current_thread")]
async fn heartbeats_do_not_allocate() {
    let coordinator = Coordinator::start(Config::default()).await.unwrap();
    let ids: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    for id in &ids {
        coordinator
            .register(RegisterRequest::new(id.as_str()))
            .await
            .unwrap();
    }
    // Sanity check of the counter itself.
    assert!(allocations_during(|| drop(vec![1u8; 16])) >= 1);
    let n = allocations_during(|| {
        for _ in 0..100 {
            for id in &ids {
                assert!(coordinator.heartbeat_now(id).alive);
            }
            assert!(!coordinator.heartbeat_now("unknown").alive);
        }
    });
    assert_eq!(n, 0, "the heartbeat hot path allocated {n} times");
    coordinator.shutdown().await;
}
