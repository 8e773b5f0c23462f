#!/usr/bin/env bash
# Heartbeat throughput over HTTP, measured with wrk against `vigil serve` on loopback.
#   bash benches/wrk/run.sh            # needs wrk (apt-get install wrk)
# Env: WORKERS (1000), DURATION (10s), CONNECTIONS (64), THREADS (1, wrk's), BATCH (100), PORT (7431),
# SERVER_THREADS (0: vigil's default of one per core; 1: single-threaded runtime)
# The server runs with --heartbeat-rate 0: the per-instance limit would otherwise cap each
# worker at 1000/min, which is the point of the limit, not of this measurement.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORKERS=${WORKERS:-1000} DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1} BATCH=${BATCH:-100} PORT=${PORT:-7431} SERVER_THREADS=${SERVER_THREADS:-0}
export WORKERS BATCH
cargo build --release --quiet
./target/release/vigil serve --listen 127.0.0.1:$PORT --heartbeat-rate 0 --ttl 1h --threads "$SERVER_THREADS" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
# Register the workers in batches of 500.
for ((i = 0; i < WORKERS; i += 500)); do
  body=$(python3 -c "import json,sys; i=$i; n=min(500,$WORKERS-i); print(json.dumps([{'jsonrpc':'2.0','method':'system.register','params':{'id':f'worker-{k}','roles':['worker']},'id':k} for k in range(i,i+n)]))")
  curl -sf -X POST http://127.0.0.1:$PORT/rpc -H 'content-type: application/json' -d "$body" >/dev/null
done
# Check once that the requests the scripts send are answered alive (wrk's Lua `response`
# hook would cost the load generator more than the server spends per request).
check=$(curl -sf -X POST http://127.0.0.1:$PORT/rpc -H 'content-type: application/json' \
  -d '{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"worker-1"},"id":1}')
case "$check" in *'"alive":true'*) ;; *) echo "unexpected answer: $check" >&2; exit 1;; esac
echo "== one heartbeat per request ($WORKERS workers, $CONNECTIONS connections, $THREADS wrk thread(s), $DURATION)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/wrk/heartbeat.lua http://127.0.0.1:$PORT/rpc
echo "== batches of $BATCH heartbeats per request (requests/s × $BATCH = heartbeats/s)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/wrk/batch.lua http://127.0.0.1:$PORT/rpc
