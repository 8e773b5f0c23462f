#!/usr/bin/env bash
# Maximum heartbeat throughput per transport, measured with `vigil load --rate max` against
# `vigil serve` on loopback (the harness and the server share the machine).
#   bash benches/load/transports.sh
# Env: WORKERS (10000), DURATION (10s), BATCH (100), PORT (7441), SERVER_THREADS (1),
# CONCURRENCY (64), CONNECTIONS (8, WebSockets)
# The server runs with --heartbeat-rate 0: the per-instance limit would otherwise cap each
# worker at 1000/min, which is the point of the limit, not of this measurement.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORKERS=${WORKERS:-10000} DURATION=${DURATION:-10s} BATCH=${BATCH:-100} PORT=${PORT:-7441}
SERVER_THREADS=${SERVER_THREADS:-1} CONCURRENCY=${CONCURRENCY:-64} CONNECTIONS=${CONNECTIONS:-8}
cargo build --release --quiet
./target/release/vigil serve --listen 127.0.0.1:$PORT --heartbeat-rate 0 --ttl 1h \
  --threads "$SERVER_THREADS" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
run() {
  echo "== $*"
  ./target/release/vigil load --target http://127.0.0.1:$PORT --rate max --workers "$WORKERS" \
    --duration "$DURATION" --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
    --no-progress "$@"
}
for transport in http ws ws-binary; do
  run --transport "$transport" --prefix "$transport-1" --batch 1
  run --transport "$transport" --prefix "$transport-$BATCH" --batch "$BATCH"
done
run --transport inproc --prefix inproc
