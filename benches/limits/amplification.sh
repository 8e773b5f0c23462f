#!/usr/bin/env bash
# The amplification attack of issue 14 (point 11) and a flood of unknown ids, against one
# `vigil serve` binary: answer sizes and the server's resident memory.
#   bash benches/limits/amplification.sh [BINARY]   # default: ./target/release/vigil
# Registers INSTANCES (2000) instances with a little metadata, then POSTs one batch of CALLS
# (1000) `system.get_state` calls without params (55 KB) and reports the size of the answer
# and the server's peak RSS (VmHWM); then heartbeats FLOOD (10000) distinct unregistered ids
# in batches of 1000 and reports the server's VmRSS before and after.
# Env: PORT (7461), INSTANCES, CALLS, FLOOD. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-./target/release/vigil}
PORT=${PORT:-7461} INSTANCES=${INSTANCES:-2000} CALLS=${CALLS:-1000} FLOOD=${FLOOD:-10000}
url=http://127.0.0.1:$PORT
dir=$(mktemp -d)
"$BIN" serve --listen 127.0.0.1:$PORT --ttl 1h --threads 2 >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf $url/healthz >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2 " KiB"}' /proc/$pid/status; }
peak() { awk '/VmHWM/ {print $2 " KiB"}' /proc/$pid/status; }
# A JSON array of `n` requests from `template`, in which `@` is the request number padded to
# seven digits (for instance ids) and `^` the number itself (for JSON-RPC ids).
batch() {
    local from=$1 n=$2 template=$3 i pad item
    printf '['
    for ((i = from; i < from + n; i++)); do
        [ $i -gt $from ] && printf ','
        printf -v pad '%07d' $i
        item=${template//@/$pad}
        printf '%s' "${item//^/$i}"
    done
    printf ']'
}
for ((from = 0; from < INSTANCES; from += 1000)); do
    n=$(( INSTANCES - from < 1000 ? INSTANCES - from : 1000 ))
    batch $from $n '{"jsonrpc":"2.0","method":"system.register","params":{"id":"worker-@","roles":["worker"],"metadata":{"host":"host-@.example.internal","pid":4242}},"id":^}' \
        >"$dir/register.json"
    curl -sf $url/rpc -H 'content-type: application/json' --data-binary @"$dir/register.json" >/dev/null
done
batch 0 "$CALLS" '{"jsonrpc":"2.0","method":"system.get_state","id":^}' >"$dir/attack.json"
echo "instances registered: $INSTANCES"
echo "attack request: $(stat -c %s "$dir/attack.json") bytes, $CALLS x system.get_state"
echo "RSS before the attack: $(rss)"
curl -s $url/rpc -H 'content-type: application/json' --data-binary @"$dir/attack.json" \
    -o "$dir/answer.json" -w 'attack answer: %{size_download} bytes in %{time_total} s\n'
refused=$(grep -o '"code":-32005' "$dir/answer.json" | wc -l || true)
echo "entries refused for the byte budget (-32005): $refused"
echo "RSS after the attack: $(rss), peak RSS so far: $(peak)"
rm -f "$dir/answer.json"
before=$(rss)
for ((from = 0; from < FLOOD; from += 1000)); do
    batch $from 1000 '{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"stranger-@"},"id":^}' \
        >"$dir/flood.json"
    curl -sf $url/rpc -H 'content-type: application/json' --data-binary @"$dir/flood.json" >/dev/null
done
echo "RSS before a flood of $FLOOD unknown-id heartbeats: $before, after: $(rss)"
