#!/usr/bin/env bash
# Side by side: Debian's memcached -t 1 against corecache -t 1, each pinned to
# CPU 0, driven by memaslap (libmemcached-tools) pinned to CPU 1, in
# alternating rounds. Prints per-round figures, then medians, the ratio
# corecache/memcached, and server CPU microseconds per operation (utime +
# stime of the server process from /proc, over the run).
#
#   benches/compare-memaslap.sh            # defaults below
#   ROUNDS=5 DURATION=20s benches/compare-memaslap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-20}
VALUE_SIZE=${VALUE_SIZE:-32}
# Keys per get (memaslap --division): 1 is single-key gets.
DIVISION=${DIVISION:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-31311}
CORECACHE=${CORECACHE:-target/release/corecache}
[ -x "$CORECACHE" ] || cargo build --release
TICKS=$(getconf CLK_TCK)

server_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_ready() {
    for _ in $(seq 1 100); do
        memcstat --servers="127.0.0.1:$PORT" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "server did not start" >&2
    return 1
}

# run_round NAME COMMAND...: prints "NAME ops/s cpu_us_per_op"
run_round() {
    local name=$1
    shift
    "$@" &
    local pid=$!
    wait_ready
    local before after output ops tps
    before=$(server_ticks "$pid")
    output=$(taskset -c "$LOAD_CPU" memcaslap -s "127.0.0.1:$PORT" -T 1 -c "$CONCURRENCY" -t "$DURATION" -X "$VALUE_SIZE" -d "$DIVISION" 2>&1)
    after=$(server_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    ops=$(echo "$output" | sed -n 's/^Run time: .* Ops: \([0-9]*\) TPS: \([0-9]*\).*/\1/p')
    tps=$(echo "$output" | sed -n 's/^Run time: .* Ops: \([0-9]*\) TPS: \([0-9]*\).*/\2/p')
    awk -v n="$name" -v tps="$tps" -v ops="$ops" -v t="$((after - before))" -v hz="$TICKS" \
        'BEGIN { printf "%s %d %.2f\n", n, tps, t / hz * 1e6 / ops }'
}

memcached_user=()
[ "$(id -u)" -eq 0 ] && memcached_user=(-u root)

results=$(mktemp)
echo "round server ops_per_s server_cpu_us_per_op" >&2
for round in $(seq 1 "$ROUNDS"); do
    run_round memcached taskset -c "$SERVER_CPU" memcached "${memcached_user[@]}" -t 1 -p "$PORT" -l 127.0.0.1 -m 64 | tee -a "$results" | sed "s/^/$round /" >&2
    run_round corecache "$CORECACHE" --cores "$SERVER_CPU" -p "$PORT" -l 127.0.0.1 -m 64 | tee -a "$results" | sed "s/^/$round /" >&2
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mc_tps=$(awk '$1 == "memcached" { print $2 }' "$results" | median)
cc_tps=$(awk '$1 == "corecache" { print $2 }' "$results" | median)
mc_cpu=$(awk '$1 == "memcached" { print $3 }' "$results" | median)
cc_cpu=$(awk '$1 == "corecache" { print $3 }' "$results" | median)
rm -f "$results"
echo "memaslap: 1 thread, $CONCURRENCY connections, ${VALUE_SIZE}-byte values, get:set 9:1, $DIVISION keys per get, $DURATION x $ROUNDS rounds"
printf '%-10s %12s %18s\n' server "ops/s" "server us/op"
printf '%-10s %12s %18s\n' memcached "$mc_tps" "$mc_cpu"
printf '%-10s %12s %18s\n' corecache "$cc_tps" "$cc_cpu"
awk -v a="$cc_tps" -v b="$mc_tps" -v c="$cc_cpu" -v d="$mc_cpu" \
    'BEGIN { printf "ratio corecache/memcached: ops/s %.2fx, server CPU per op %.2fx\n", a / b, c / d }'
