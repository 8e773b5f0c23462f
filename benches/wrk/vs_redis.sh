#!/usr/bin/env bash
# One heartbeat per HTTP request to `vigil serve` against one bare Redis EVALSHA of a heartbeat
# script, in one run on one machine, alternating, with the same connection count.
#   bash benches/wrk/vs_redis.sh     # needs wrk, redis-server and redis-benchmark (redis-tools)
# Env: ROUNDS (3), WORKERS (1000), CONNECTIONS (64), DURATION (10s, wrk's),
# REDIS_REQUESTS (700000 for the first round; later rounds ask for the previous round's Redis
# rate × DURATION, so both sides run about as long), SERVER_THREADS (0: one runtime worker per
# core, as benches/wrk/run.sh; 1: a single-threaded runtime, Redis's shape), BASELINE (the path
# of another `vigil` binary, e.g. a release build of an earlier commit: measured too, in the
# same rounds, right after this tree's), REDIS_THREADS (empty: redis-benchmark's own
# single-threaded event loop, like `wrk -t1`; N: its `--threads N` mode, which here ran about 30 %
# slower with N = 1, so it is not the default)
#
# Each round runs, one after the other:
#   redis-benchmark -h 127.0.0.1 -p $RPORT -c $CONNECTIONS -n $REDIS_REQUESTS -r $WORKERS \
#     --csv EVALSHA $SHA 1 instance:__rand_int__ $NOW_MS
#   wrk -t1 -c$CONNECTIONS -d$DURATION -s benches/wrk/heartbeat.lua http://127.0.0.1:$VPORT/rpc
# and prints both rates and their ratio vigil/redis, with each server's CPU time per request
# (from /proc, all threads: what a request costs it, whatever else runs); at the end the
# medians and their ratio.
#
# The Redis side is what a Redis-first coordinator (ClaudeBench) does per heartbeat: one
# EVALSHA of a script of the shape of Vigil's own write-through script
# (src/store/lua/heartbeats.lua) for one instance: PEXPIRE the instance hash, and if it exists
# HSET its lastSeen and status; answers 1 (alive) or 0. The 1000 instance hashes exist
# beforehand, so every call does both writes. Redis runs without persistence (no RDB, no AOF),
# single-threaded as it always runs commands; redis-benchmark runs its single-threaded event
# loop, as wrk runs one thread (-t1). Neither side pipelines: one request per connection in
# flight.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3} WORKERS=${WORKERS:-1000} CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s} REDIS_REQUESTS=${REDIS_REQUESTS:-700000}
SERVER_THREADS=${SERVER_THREADS:-0} BASELINE=${BASELINE:-} REDIS_THREADS=${REDIS_THREADS:-}
export WORKERS
for tool in wrk redis-server redis-benchmark redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
cargo build --release --quiet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

# A private Redis in a temp dir, on a free loopback port.
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  >"$dir/redis.log" 2>&1 &
rpid=$!
pids+=("$rpid")
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
script="if redis.call('PEXPIRE', KEYS[1], 30000) == 1 then
  redis.call('HSET', KEYS[1], 'lastSeen', ARGV[1], 'status', 'ACTIVE')
  return 1
end
return 0"
sha=$(redis-cli -p "$rport" SCRIPT LOAD "$script")
# The instance hashes, named as redis-benchmark's -r fills __rand_int__ (12 digits).
redis-cli -p "$rport" EVAL "for i = 0, tonumber(ARGV[1]) - 1 do
  redis.call('HSET', string.format('instance:%012d', i), 'id', 'worker-' .. i, 'status', 'ACTIVE', 'lastSeen', '0')
end" 0 "$WORKERS" >/dev/null
now_ms=$(date +%s%3N)
alive=$(redis-cli -p "$rport" EVALSHA "$sha" 1 instance:000000000001 "$now_ms")
[ "$alive" = 1 ] || { echo "the Redis heartbeat script answered $alive" >&2; exit 1; }

# vigil serve as benches/wrk/run.sh starts it, with WORKERS registered workers; its port in
# $port (not a subshell: its pid must reach the list the cleanup kills).
start_vigil() { # $1: the binary, $2: a name for its log
  port=$(free_port)
  "$1" serve --listen 127.0.0.1:"$port" --heartbeat-rate 0 --ttl 1h --threads "$SERVER_THREADS" \
    >"$dir/$2.log" 2>&1 &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 50); do curl -sf http://127.0.0.1:"$port"/healthz >/dev/null && break; sleep 0.1; done
  for ((i = 0; i < WORKERS; i += 500)); do
    body=$(python3 -c "import json; i=$i; n=min(500,$WORKERS-i); print(json.dumps([{'jsonrpc':'2.0','method':'system.register','params':{'id':f'worker-{k}','roles':['worker']},'id':k} for k in range(i,i+n)]))")
    curl -sf -X POST http://127.0.0.1:"$port"/rpc -H 'content-type: application/json' -d "$body" >/dev/null
  done
  check=$(curl -sf -X POST http://127.0.0.1:"$port"/rpc -H 'content-type: application/json' \
    -d '{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"worker-1"},"id":1}')
  case "$check" in *'"alive":true'*) ;; *) echo "$2: unexpected answer: $check" >&2; exit 1;; esac
}
start_vigil ./target/release/vigil vigil
vport=$port vpid=$spid bport= bpid=
if [ -n "$BASELINE" ]; then
  start_vigil "$BASELINE" baseline
  bport=$port bpid=$spid
fi

# CPU time a process (all its threads) has used, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# "rate µs": requests per second, and the server's CPU time per request in microseconds (less
# sensitive than the rate to whatever else runs on the machine).
redis_rate() {
  local before after rate
  before=$(ticks "$rpid")
  # --csv: "test","rps",... then one line per test; the rate is the second field.
  rate=$(redis-benchmark -h 127.0.0.1 -p "$rport" -c "$CONNECTIONS" -n "$REDIS_REQUESTS" -r "$WORKERS" \
    ${REDIS_THREADS:+--threads "$REDIS_THREADS"} --csv EVALSHA "$sha" 1 instance:__rand_int__ "$now_ms" 2>/dev/null \
    | awk -F'"' 'NR == 2 { print $4 }')
  after=$(ticks "$rpid")
  echo "$rate $(python3 -c "print(($after - $before) / $hz * 1e6 / $REDIS_REQUESTS)")"
}
vigil_rate() { # $1: the port, $2: the server's pid
  local before after out
  before=$(ticks "$2")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s benches/wrk/heartbeat.lua http://127.0.0.1:"$1"/rpc)
  after=$(ticks "$2")
  # "N requests in …" and "Requests/sec: R"
  awk -v t=$((after - before)) -v hz="$hz" '/ requests in / { n = $1 } /^Requests\/sec:/ { r = $2 }
    END { if (n > 0) print r, t / hz * 1e6 / n }' <<<"$out"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "== one heartbeat per request: vigil (wrk -t1 -c$CONNECTIONS, $DURATION, --threads $SERVER_THREADS)" \
  "against Redis EVALSHA (redis-benchmark -c $CONNECTIONS${REDIS_THREADS:+ --threads $REDIS_THREADS}), $WORKERS instances, $ROUNDS rounds"
echo "   $(redis-server --version | cut -d' ' -f1-3), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), script $sha"
reds=() vigs=() bases=() redcpu=() vigcpu=() basecpu=()
for ((round = 1; round <= ROUNDS; round++)); do
  read -r r rc < <(redis_rate)
  read -r v vc < <(vigil_rate "$vport" "$vpid")
  [ -n "$r" ] && [ -n "$v" ] || { echo "round $round: no figure (redis '$r', vigil '$v')" >&2; exit 1; }
  reds+=("$r") vigs+=("$v") redcpu+=("$rc") vigcpu+=("$vc")
  line=$(printf 'round %d: redis %7.0f/s %4.1f µs  vigil %7.0f/s %4.1f µs  vigil/redis %s' \
    "$round" "$r" "$rc" "$v" "$vc" "$(ratio "$v" "$r")")
  if [ -n "$bport" ]; then
    read -r b bc < <(vigil_rate "$bport" "$bpid")
    bases+=("$b") basecpu+=("$bc")
    line+=$(printf '  baseline %7.0f/s %4.1f µs  baseline/redis %s' "$b" "$bc" "$(ratio "$b" "$r")")
  fi
  echo "$line"
  if [[ $DURATION =~ ^([0-9]+)s$ ]]; then
    REDIS_REQUESTS=$(python3 -c "print(int($r * ${BASH_REMATCH[1]}))")
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mr=$(median "${reds[@]}") mv=$(median "${vigs[@]}") mrc=$(median "${redcpu[@]}") mvc=$(median "${vigcpu[@]}")
line=$(printf 'medians: redis %7.0f/s %4.1f µs  vigil %7.0f/s %4.1f µs  vigil/redis %s' \
  "$mr" "$mrc" "$mv" "$mvc" "$(ratio "$mv" "$mr")")
if [ -n "$bport" ]; then
  mb=$(median "${bases[@]}") mbc=$(median "${basecpu[@]}")
  line+=$(printf '  baseline %7.0f/s %4.1f µs  baseline/redis %s  vigil/baseline %s' \
    "$mb" "$mbc" "$(ratio "$mb" "$mr")" "$(ratio "$mv" "$mb")")
fi
echo "$line"
echo "(µs: the server's CPU time per request, all its threads; redis/vigil of those medians:" \
  "$(ratio "$mrc" "$mvc"))"
