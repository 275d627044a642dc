#!/usr/bin/env bash
# Side by side: Debian's memcached -t 1 against corecache -t 1, each pinned to
# CPU 0, driven by corecache-loadgen pinned to CPU 1, in alternating rounds.
# Workloads: text and binary at pipeline 1 and 16, a 10-key multi-get, and an
# open-loop run each for text and binary at 70% of memcached's measured
# pipeline-1 capacity in that protocol. 32-byte values,
# get:set 10:1, 20 connections. Prints medians per workload, the ratio
# corecache/memcached, and server CPU microseconds per operation (utime +
# stime from /proc), and draws the open-loop latency chart as SVG.
#
#   benches/compare.sh                       # 3 rounds of 5 s per workload
#   ROUNDS=5 DURATION=10 benches/compare.sh
#   OUT=benches/results/2026-11-23 benches/compare.sh
#   CORECACHE_BEFORE=/tmp/corecache-old benches/compare.sh   # adds that build as
#                                            # "before" to every round (before/after)
#   WORKLOADS="text-p1 open-loop" benches/compare.sh   # a subset, or more (meta-p16
#                                            # is not in the default set; open-loop needs
#                                            # text-p1, binary-open-loop binary-p1)
#   LOADGEN=/tmp/loadgen-old benches/compare.sh   # another load generator build
#                                            # (its own CPU per op, loadgen_cpu_us_per_op)
#   FLOOR=1 benches/compare.sh               # adds examples/uring_floor (canned text
#                                            # replies over a direct io_uring loop) to
#                                            # the text workloads: the floor of CPU per op
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-31611}
OUT=${OUT:-target/compare}
CORECACHE_ARGS=${CORECACHE_ARGS:-"-t 1"}
CORECACHE_BEFORE=${CORECACHE_BEFORE:-}
FLOOR=${FLOOR:-}
SERVERS=(memcached)
[ -n "$CORECACHE_BEFORE" ] && SERVERS+=(before)
SERVERS+=(corecache)
[ -n "$FLOOR" ] && SERVERS+=(floor)
mkdir -p "$OUT"
cargo build --release --workspace >&2
[ -n "$FLOOR" ] && cargo build --release --example uring_floor >&2
CORECACHE=target/release/corecache
LOADGEN=${LOADGEN:-target/release/corecache-loadgen}
TICKS=$(getconf CLK_TCK)
user=()
[ "$(id -u)" -eq 0 ] && user=(-u root)

server_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_server() { # NAME -> sets SERVER_PID
    case $1 in
    memcached) taskset -c "$SERVER_CPU" memcached "${user[@]}" -t 1 -m 1024 -p "$PORT" -l 127.0.0.1 & ;;
    # shellcheck disable=SC2086
    corecache | before)
        binary=$CORECACHE
        [ "$1" = before ] && binary=$CORECACHE_BEFORE
        "$binary" $CORECACHE_ARGS --cores "$SERVER_CPU" -m 1024 -p "$PORT" -l 127.0.0.1 &
        ;;
    floor) target/release/examples/uring_floor "$PORT" "$SERVER_CPU" & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if printf 'version\r\n' | timeout 1 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"version\r\n")
sys.exit(0 if s.recv(8) else 1)  # any reply: the floor answers VALUE' "$PORT" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "$1 did not start" >&2
    exit 1
}

# workload NAME -> loadgen arguments
workload_args() {
    local common=(-c 20 --keys 100000 --value-size 32 --get 10 --set 1 --duration "$DURATION" --warmup "$WARMUP")
    case $1 in
    text-p1) echo "${common[@]} --protocol text --pipeline 1" ;;
    text-p16) echo "${common[@]} --protocol text --pipeline 16" ;;
    binary-p1) echo "${common[@]} --protocol binary --pipeline 1" ;;
    binary-p16) echo "${common[@]} --protocol binary --pipeline 16" ;;
    multiget10) echo "${common[@]} --protocol text --pipeline 1 --multiget 10" ;;
    meta-p16) echo "${common[@]} --protocol meta --pipeline 16" ;;
    open-loop) echo "${common[@]} --protocol text --rate $RATE" ;;
    binary-open-loop) echo "${common[@]} --protocol binary --rate $BINARY_RATE" ;;
    esac
}

# shellcheck disable=SC2206
WORKLOADS=(${WORKLOADS:-text-p1 text-p16 binary-p1 binary-p16 multiget10 open-loop binary-open-loop})
RATE=""
BINARY_RATE=""
results="$OUT/results.tsv"

# 70% of memcached's round-1 throughput in WORKLOAD (the open-loop rates).
seventy_percent_of() {
    python3 -c "
import csv
rows = [r for r in csv.DictReader(open('$results'), delimiter='\t') if r['server'] == 'memcached' and r['workload'] == '$1']
print(int(float(rows[0]['ops_per_sec']) * 0.7))"
}
echo -e "round\tserver\tworkload\tops_per_sec\tkeys_per_sec\tp50_us\tp99_us\tp999_us\tserver_cpu_us_per_op\tloadgen_cpu_us_per_op" >"$results"
for round in $(seq 1 "$ROUNDS"); do
    for server in "${SERVERS[@]}"; do
        start_server "$server"
        # Load every key first, outside any measurement.
        "$LOADGEN" run -s "127.0.0.1:$PORT" --cpus "$LOAD_CPU" -c 20 --keys 100000 --value-size 32 --prefill --requests 1 --warmup 0 \
            >/dev/null 2>"$OUT/loadgen.log"
        for workload in "${WORKLOADS[@]}"; do
            # The floor answers text get and set only.
            if [ "$server" = floor ] && ! [[ "$workload" =~ ^(text-p1|text-p16|open-loop)$ ]]; then
                continue
            fi
            if [ "$workload" = open-loop ] && [ -z "$RATE" ]; then
                # 70% of memcached's unpipelined text capacity, measured in round 1.
                RATE=$(seventy_percent_of text-p1)
                echo "open-loop rate: $RATE ops/s" >&2
            fi
            if [ "$workload" = binary-open-loop ] && [ -z "$BINARY_RATE" ]; then
                BINARY_RATE=$(seventy_percent_of binary-p1)
                echo "binary open-loop rate: $BINARY_RATE ops/s" >&2
            fi
            json="$OUT/$server-$workload-$round.json"
            before=$(server_ticks "$SERVER_PID")
            # shellcheck disable=SC2046
            "$LOADGEN" run -s "127.0.0.1:$PORT" --cpus "$LOAD_CPU" $(workload_args "$workload") \
                --json "$json" >/dev/null 2>"$OUT/loadgen.log"
            after=$(server_ticks "$SERVER_PID")
            python3 - "$json" "$round" "$server" "$workload" "$((after - before))" "$TICKS" >>"$results" <<'PY'
import json, sys
path, round_, server, workload, ticks, hz = sys.argv[1:]
r = json.load(open(path))
ops = r["operations"]
# Server CPU over the whole loadgen run (warm-up included), per operation of that run.
run_ops = ops * (1 + float(__import__("os").environ.get("WARMUP", "1")) / r["seconds"])
keys = r["ops_per_sec"] * (10 if workload == "multiget10" else 1)
a = r["latency"]["all"]
print(f"{round_}\t{server}\t{workload}\t{r['ops_per_sec']:.0f}\t{keys:.0f}\t{a['p50_us']:.1f}\t{a['p99_us']:.1f}\t{a['p999_us']:.1f}\t{int(ticks) / int(hz) * 1e6 / run_ops:.2f}\t{r['loadgen_cpu_us_per_op']:.2f}")
if r["errors"]:
    print(f"errors in {path}: {r['errors']}", file=sys.stderr)
PY
            tail -1 "$results" >&2
        done
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    done
done

python3 - "$results" "${SERVERS[@]}" <<'PY' | tee "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
fields = ["ops_per_sec", "keys_per_sec", "p50_us", "p99_us", "p999_us", "server_cpu_us_per_op", "loadgen_cpu_us_per_op"]
def measured(server, workload):
    return any(r["server"] == server and r["workload"] == workload for r in rows)
def median(server, workload, field):
    values = [float(r[field]) for r in rows if r["server"] == server and r["workload"] == workload]
    return statistics.median(values)
workloads = list(dict.fromkeys(r["workload"] for r in rows))
servers = sys.argv[2:]
rounds = len(set(r["round"] for r in rows))
print(f"medians of {rounds} alternating rounds; ratio = corecache / memcached, vs X = corecache / X, mc/floor = memcached / floor")
print(f"{'workload':12} {'server':10} {'ops/s':>10} {'keys/s':>10} {'p50 us':>8} {'p99 us':>8} {'p99.9':>8} {'srv us/op':>10} {'load us/op':>10}")
for w in workloads:
    for s in servers:
        if not measured(s, w):
            continue
        m = [median(s, w, f) for f in fields]
        print(f"{w:12} {s:10} {m[0]:10.0f} {m[1]:10.0f} {m[2]:8.1f} {m[3]:8.1f} {m[4]:8.1f} {m[5]:10.2f} {m[6]:10.2f}")
    comparisons = [("ratio", "corecache", "memcached"), ("vs before", "corecache", "before"),
                   ("vs floor", "corecache", "floor"), ("mc/floor", "memcached", "floor")]
    for label, server, base in comparisons:
        if measured(base, w):
            ratio = [median(server, w, f) / max(median(base, w, f), 1e-9) for f in fields]
            print(f"{w:12} {label:10} {ratio[0]:9.2f}x {ratio[1]:9.2f}x {ratio[2]:7.2f}x {ratio[3]:7.2f}x {ratio[4]:7.2f}x {ratio[5]:9.2f}x")
PY

last=$ROUNDS
if [ -n "$RATE" ]; then # the text open-loop run was among the workloads
    "$LOADGEN" chart --output "$OUT/open-loop-latency.svg" --title "open loop at $RATE ops/s: latency by percentile" \
        "memcached=$OUT/memcached-open-loop-$last.json" "corecache=$OUT/corecache-open-loop-$last.json"
    echo "chart: $OUT/open-loop-latency.svg"
fi
