#!/usr/bin/env bash
# Cross-core forwarding: server CPU per operation of corecache with two
# shards (-t 2, both executors on the same CPU so the load keeps the other
# one) against one shard, at the same offered open-loop rate. With two
# shards half of every connection's keys are owned by the other core and
# travel over the channel mesh. Alternating rounds; prints each run and the
# -t 2 / -t 1 ratio of the medians.
#
#   benches/cross-core.sh                     # 3 rounds, 40k ops/s, 5 s
#   ROUNDS=5 RATE=50000 benches/cross-core.sh
#   CORECACHE=/tmp/other-build benches/cross-core.sh
#   CORECACHE_BEFORE=/tmp/old-build benches/cross-core.sh   # both builds in every
#                                             # round (before/after)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
RATE=${RATE:-40000}
DURATION=${DURATION:-5}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-31811}
cargo build --release --workspace >&2
CORECACHE=${CORECACHE:-target/release/corecache}
BUILDS=(corecache)
[ -n "${CORECACHE_BEFORE:-}" ] && BUILDS=(before corecache)
LOADGEN=target/release/corecache-loadgen
TICKS=$(getconf CLK_TCK)
json=$(mktemp)
trap 'rm -f "$json"' EXIT

for round in $(seq 1 "$ROUNDS"); do
    for build in "${BUILDS[@]}"; do
        binary=$CORECACHE
        [ "$build" = before ] && binary=$CORECACHE_BEFORE
        for cores in "$SERVER_CPU" "$SERVER_CPU,$SERVER_CPU"; do
            "$binary" --cores "$cores" -m 256 -p "$PORT" -l 127.0.0.1 >/dev/null 2>&1 &
            server=$!
            for _ in $(seq 1 100); do
                if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)' "$PORT" 2>/dev/null; then
                    break
                fi
                sleep 0.05
            done
            "$LOADGEN" run -s "127.0.0.1:$PORT" --cpus "$LOAD_CPU" -c 20 --keys 100000 --value-size 32 \
                --prefill --requests 1 --warmup 0 >/dev/null 2>&1
            before=$(awk '{print $14 + $15}' "/proc/$server/stat")
            "$LOADGEN" run -s "127.0.0.1:$PORT" --cpus "$LOAD_CPU" -c 20 --keys 100000 --value-size 32 \
                --get 10 --set 1 --rate "$RATE" --duration "$DURATION" --warmup 0 --json "$json" >/dev/null 2>&1
            after=$(awk '{print $14 + $15}' "/proc/$server/stat")
            kill "$server"
            wait "$server" 2>/dev/null || true
            python3 - "$json" "$round" "$build" "$cores" "$((after - before))" "$TICKS" <<'PY'
import json, sys
path, round_, build, cores, ticks, hz = sys.argv[1:]
r = json.load(open(path))
print(f"round {round_} {build} cores={cores} ops/s {r['ops_per_sec']:.0f} srv_us/op {int(ticks) / int(hz) * 1e6 / r['operations']:.2f} p99 {r['latency']['all']['p99_us']:.1f} errors {r['errors']}")
PY
        done
    done
done | tee /dev/stderr | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    fields = line.split()
    runs.setdefault(fields[2], {}).setdefault(fields[3], []).append(float(fields[7]))
for build, by_cores in runs.items():
    one, two = (statistics.median(v) for v in by_cores.values())
    print(f"{build}: median server CPU us/op -t 1 {one:.2f}, -t 2 {two:.2f}; ratio {two / one:.2f}x")'
