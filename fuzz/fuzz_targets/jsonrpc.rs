//! Fuzzes JSON-RPC decoding and parameter validation: any body, through both the general
//! path (`handle_body`) and the server's fast path (`handle_body_bytes`), and any binary
//! heartbeat frame. No input may panic, and every answer must be a JSON-RPC 2.0 response
//! (an object, or a non-empty array of them) with exactly one of `result` and `error`.
//!
//!     cargo +nightly fuzz run jsonrpc            # from the repository root
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vigil::rpc::{Dispatcher, RpcLimits};
use vigil::{Config, Coordinator};

fn fixture() -> &'static (tokio::runtime::Runtime, Dispatcher) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, Dispatcher)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let coordinator = rt.block_on(Coordinator::start(Config::default())).unwrap();
        (rt, Dispatcher::new(coordinator, RpcLimits::default()))
    })
}

fn check_response(v: &Value) {
    let o = v.as_object().expect("a response is an object");
    assert_eq!(o.get("jsonrpc"), Some(&Value::String("2.0".into())));
    assert!(o.contains_key("result") != o.contains_key("error"), "{v}");
    assert!(o.contains_key("id"), "{v}");
    if let Some(e) = o.get("error") {
        assert!(e["code"].is_i64() && e["message"].is_string(), "{v}");
    }
}

fn check(answer: &Value) {
    match answer {
        Value::Array(items) => {
            assert!(!items.is_empty());
            items.iter().for_each(check_response);
        }
        one => check_response(one),
    }
}

fuzz_target!(|data: &[u8]| {
    let (rt, d) = fixture();
    if let Some(answer) = rt.block_on(d.handle_body(data)) {
        check(&answer);
    }
    if let Some(bytes) = rt.block_on(d.handle_body_bytes(data)) {
        let answer: Value = serde_json::from_slice(&bytes).expect("the fast path writes JSON");
        check(&answer);
    }
    let _ = rt.block_on(d.handle_binary(data));
});
