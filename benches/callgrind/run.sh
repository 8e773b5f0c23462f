#!/usr/bin/env bash
# Instructions per heartbeat on the hot path, counted by callgrind (repeatable, unlike timings on
# a shared VM): a small program registers 100k instances, then calls `heartbeat_now` 1M times
# over them inside `beat_loop`; only `beat_loop` is counted.
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
tokio = { version = "1", features = ["rt-multi-thread"] }
[profile.release]
debug = 1
[workspace]
TOML
    cat > "$dir/src/main.rs" <<'RUST'
use vigil::{Config, Coordinator, RegisterRequest};

#[inline(never)]
fn beat_loop(c: &Coordinator, ids: &[String]) -> u64 {
    let mut alive = 0;
    for k in 0..1_000_000usize {
        alive += c.heartbeat_now(&ids[(k * 7919) % ids.len()]).alive as u64;
    }
    alive
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Coordinator::start(Config::default()).await.unwrap();
        let ids: Vec<String> = (0..100_000).map(|i| format!("worker-{i}")).collect();
        for id in &ids {
            c.register(RegisterRequest::new(id.as_str())).await.unwrap();
        }
        assert_eq!(beat_loop(&c, &ids), 1_000_000);
        c.shutdown().await;
    });
}
RUST
    (cd "$dir" && cargo build --release --quiet)
    local total
    total=$(cd "$dir" && valgrind --tool=callgrind --toggle-collect='hbcount::beat_loop' \
        --callgrind-out-file="$work/cg-$1" ./target/release/hbcount 2>&1 | sed -n 's/.*Collected : //p')
    echo "$1: $total instructions for 1M heartbeats = $((total / 1000000)) per heartbeat"
}
if [ $# -ge 1 ]; then
    git worktree add --detach "$work/ref" "$1" >/dev/null 2>&1
    count "$1" "$work/ref" ""
fi
count "this-tree" "$here" ", default-features = false"
