#!/usr/bin/env bash
# Instructions per heartbeat on the hot path, counted by callgrind (repeatable, unlike timings on
# a shared VM): a small program registers 100k instances, then calls `heartbeat_now` 1M times
# over them inside `still` with time standing still (after each instance's first heartbeat
# nothing moves: the path without a compare-and-swap), then 1M times inside `moving`, 100k at a
# time with the clock moved in between (every heartbeat moves its cell: the compare-and-swap
# path). Only those two functions are counted. The program runs on a current-thread runtime on
# tokio's paused clock, so which path each heartbeat takes never depends on how the threads
# were scheduled (it did when the clock's ticker ran as a thread under valgrind).
#   bash benches/callgrind/run.sh          # this tree (core only: default-features = false)
#   bash benches/callgrind/run.sh REF      # also git REF, first, for a side-by-side figure
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$(pwd)
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/ref" 2>/dev/null || true; rm -rf "$work"' EXIT
count() { # $1 label, $2 path of the vigil tree, $3 extra dependency options
    local dir="$work/prog-$1"
    mkdir -p "$dir/src"
    cat > "$dir/Cargo.toml" <<TOML
[package]
name = "hbcount"
version = "0.0.0"
edition = "2024"
[dependencies]
vigil = { path = "$2" $3 }
tokio = { version = "1", features = ["rt", "time", "test-util"] }
[profile.release]
debug = 1
[workspace]
TOML
    cat > "$dir/src/main.rs" <<'RUST'
use std::time::Duration;
use vigil::{Config, Coordinator, RegisterRequest};

#[inline(never)]
fn still(c: &Coordinator, ids: &[String]) -> u64 {
    let mut alive = 0;
    for k in 0..1_000_000usize {
        alive += c.heartbeat_now(&ids[(k * 7919) % ids.len()]).alive as u64;
    }
    alive
}

#[inline(never)]
fn moving(c: &Coordinator, ids: &[String]) -> u64 {
    let mut alive = 0;
    for k in 0..ids.len() {
        alive += c.heartbeat_now(&ids[(k * 7919) % ids.len()]).alive as u64;
    }
    alive
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Coordinator::start(Config {
            ttl: Duration::from_secs(3600),
            ..Config::default()
        })
        .await
        .unwrap();
        let ids: Vec<String> = (0..100_000).map(|i| format!("worker-{i}")).collect();
        for id in &ids {
            c.register(RegisterRequest::new(id.as_str())).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(still(&c, &ids), 1_000_000);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert_eq!(moving(&c, &ids), 100_000);
        }
        c.shutdown().await;
    });
}
RUST
    (cd "$dir" && cargo build --release --quiet)
    (cd "$dir" && valgrind --tool=callgrind --toggle-collect='hbcount::still' \
        --toggle-collect='hbcount::moving' --callgrind-out-file="$work/cg-$1" \
        ./target/release/hbcount >/dev/null 2>&1)
    callgrind_annotate --inclusive=yes "$work/cg-$1" > "$work/annotated-$1" 2>/dev/null
    local still moving
    # Inclusive counts, largest first: the first line naming each function is its total.
    still=$(grep -m1 'hbcount::still' "$work/annotated-$1" | awk '{print $1}' | tr -d ,)
    moving=$(grep -m1 'hbcount::moving' "$work/annotated-$1" | awk '{print $1}' | tr -d ,)
    echo "$1: still $still instructions for 1M heartbeats = $((still / 1000000)) per heartbeat;" \
        "moving $moving = $((moving / 1000000)) per heartbeat"
}
if [ $# -ge 1 ]; then
    git worktree add --detach "$work/ref" "$1" >/dev/null 2>&1
    count "$1" "$work/ref" ""
fi
count "this-tree" "$here" ", default-features = false"
