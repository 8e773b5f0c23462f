#!/usr/bin/env bash
# Runs the JSON-RPC fuzz target with libFuzzer's coverage guidance on the stable toolchain
# (cargo-fuzz proper needs nightly for its sanitizers; coverage instrumentation alone does not).
#   bash fuzz/run-stable.sh [SECONDS]      # default 300
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_TO_RUN=${1:-300}
triple=$(rustc -vV | sed -n 's/^host: //p')
# RUSTFLAGS apply only to the target's crates when --target is given, not to build scripts.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
  cargo build --release --target "$triple" --target-dir target/cov
mkdir -p target/corpus
cp -n corpus/jsonrpc/* target/corpus/ 2>/dev/null || true
"./target/cov/$triple/release/jsonrpc" -max_total_time="$SECONDS_TO_RUN" -max_len=1024 \
  target/corpus
