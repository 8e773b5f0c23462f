#!/usr/bin/env bash
# Write-behind against write-through over the wire: two `vigil serve` on one private
# redis-server (each under its own key prefix), driven in alternation by `vigil load --compare`.
#   bash benches/load/persist.sh        # needs redis-server (apt-get install redis-server)
# Env: WORKERS (1000), DURATION (10s, per side), ROUNDS (5), RATE (5k/s for the latency run),
# PORT (7451; A on PORT, B on PORT+1, Redis on PORT+2)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORKERS=${WORKERS:-1000} DURATION=${DURATION:-10s} ROUNDS=${ROUNDS:-5} RATE=${RATE:-5k/s}
PORT=${PORT:-7451}
cargo build --release --quiet
dir=$(mktemp -d)
redis-server --port $((PORT + 2)) --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  >"$dir/redis.log" 2>&1 &
redis=$!
pids=("$redis")
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 0.5
for mode in write-behind write-through; do
  port=$PORT; prefix=a:
  [ "$mode" = write-through ] && port=$((PORT + 1)) && prefix=b:
  ./target/release/vigil serve --listen 127.0.0.1:$port --heartbeat-rate 0 --ttl 1h --threads 1 \
    --redis redis://127.0.0.1:$((PORT + 2)) --prefix "$prefix" --persist "$mode" \
    >"$dir/$mode.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
done
compare() {
  echo "== $*"
  ./target/release/vigil load --target http://127.0.0.1:$PORT --compare http://127.0.0.1:$((PORT + 1)) \
    --workers "$WORKERS" --duration "$DURATION" --rounds "$ROUNDS" --no-progress "$@"
}
compare --transport http --rate max --concurrency 64 --prefix max-http
compare --transport ws-binary --batch 100 --rate max --concurrency 64 --prefix max-bin
compare --transport http --rate "$RATE" --concurrency 256 --prefix paced
