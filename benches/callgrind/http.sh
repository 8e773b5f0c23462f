#!/usr/bin/env bash
# Instructions per single-heartbeat HTTP request in `vigil serve`, above the kernel (hyper,
# tokio, the server, the dispatcher, allocation), counted by callgrind: repeatable where
# timings on a shared VM are not. The server runs under valgrind with instrumentation off while
# it starts and WORKERS workers register; wrk warms it up for 2 s, then instrumentation is on
# for a 10 s wrk run (one heartbeat per request, as benches/wrk/run.sh), and the count is
# divided by the requests wrk made. Kernel time (the TCP stack) is not counted.
#   bash benches/callgrind/http.sh                  # this tree's release build
#   BASELINE=path/to/vigil bash benches/callgrind/http.sh   # another binary first, same way
# Env: WORKERS (1000), CONNECTIONS (64), DURATION (10s). Needs valgrind and wrk.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORKERS=${WORKERS:-1000} CONNECTIONS=${CONNECTIONS:-64} DURATION=${DURATION:-10s}
BASELINE=${BASELINE:-}
export WORKERS
cargo build --release --quiet
dir=$(mktemp -d)
vg=
cleanup() {
  [ -n "$vg" ] && kill "$vg" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
count() { # $1: a label, $2: the binary
  local port log requests total
  port=$(free_port)
  log="$dir/$1.log"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/$1.out" \
    "$2" serve --listen 127.0.0.1:"$port" --heartbeat-rate 0 --ttl 1h >"$log" 2>&1 &
  vg=$!
  for _ in $(seq 300); do curl -sf http://127.0.0.1:"$port"/healthz >/dev/null && break; sleep 0.2; done
  for ((i = 0; i < WORKERS; i += 500)); do
    body=$(python3 -c "import json; i=$i; n=min(500,$WORKERS-i); print(json.dumps([{'jsonrpc':'2.0','method':'system.register','params':{'id':f'worker-{k}','roles':['worker']},'id':k} for k in range(i,i+n)]))")
    curl -sf -X POST http://127.0.0.1:"$port"/rpc -H 'content-type: application/json' -d "$body" >/dev/null
  done
  wrk -t1 -c"$CONNECTIONS" -d2s -s benches/wrk/heartbeat.lua http://127.0.0.1:"$port"/rpc >/dev/null
  callgrind_control -i on "$vg" >/dev/null 2>&1
  requests=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s benches/wrk/heartbeat.lua \
    http://127.0.0.1:"$port"/rpc | awk '/ requests in / { print $1 }')
  callgrind_control -i off "$vg" >/dev/null 2>&1
  kill "$vg"
  wait "$vg" 2>/dev/null || true
  vg=
  total=$(sed -n 's/.*Collected : //p' "$log")
  echo "$1: $requests requests, $total instructions, $((total / requests)) per request"
}
[ -n "$BASELINE" ] && count baseline "$BASELINE"
count this-tree ./target/release/vigil
