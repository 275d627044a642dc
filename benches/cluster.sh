#!/usr/bin/env bash
# Cluster costs, measured side by side in one run (every node on CPU 0, the
# load generator on CPU 1):
#
# 1. A forwarded request against a direct one. Two nodes, --copies 1, node
#    B with weight 1000 and node A with weight 1 (A gets no ring points: B
#    owns every key). The same load goes to B (direct) and to A (every
#    request forwarded to B over the node link). Open loop at RATE for
#    server CPU per operation (both processes summed) and latency, closed
#    loop (pipeline 8) for throughput. Alternating rounds, medians, ratios.
# 2. Replication lag in a 3-node cluster (--copies 2) under a write-heavy
#    open-loop load at LAG_RATE through node 0: each node's lag p50/p99
#    (write on the acting node to the copy's ack), from `stats replication`.
# 3. Write latency for ONE, QUORUM and ALL in a 3-node cluster with
#    --copies 3: a set alone, a set then `wait 2`, a set then `wait 3`, one
#    at a time from one client (python, on CPU 1), WRITES of each.
#
#   benches/cluster.sh
#   ROUNDS=5 RATE=30000 DURATION=5 benches/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
RATE=${RATE:-20000}
LAG_RATE=${LAG_RATE:-20000}
WRITES=${WRITES:-2000}
DURATION=${DURATION:-5}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
cargo build --release --workspace >&2
CORECACHE=${CORECACHE:-target/release/corecache}
LOADGEN=target/release/corecache-loadgen
TICKS=$(getconf CLK_TCK)
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 200); do
        python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)' "$1" "$2" \
            2>/dev/null && return 0
        sleep 0.05
    done
    echo "no server on $1:$2" >&2
    return 1
}

# Starts one node per "host:port:weight" of $1 (all given the same list) with
# extra flags $2; sets $pids.
start_nodes() {
    local list=$1 extra=$2
    pids=()
    for entry in ${list//,/ }; do
        IFS=: read -r host port _ <<<"$entry"
        # shellcheck disable=SC2086
        "$CORECACHE" -l "$host" -p "$port" --cores "$SERVER_CPU" -m 256 --cluster-nodes "$list" $extra \
            >"$work/$host.log" 2>&1 &
        pids+=($!)
    done
    for entry in ${list//,/ }; do
        IFS=: read -r host port _ <<<"$entry"
        wait_port "$host" "$port"
    done
    sleep 1.5 # failure detection finds every node
}

cpu_ticks() {
    local total=0
    for pid in "${pids[@]}"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

stop_nodes() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

report() { # json round target mode ticks
    python3 - "$@" "$TICKS" <<'PY'
import json, sys
path, round_, target, mode, ticks, hz = sys.argv[1:]
r = json.load(open(path))
print(f"round {round_} {target} {mode} ops/s {r['ops_per_sec']:.0f} srv_us/op "
      f"{int(ticks) / int(hz) * 1e6 / max(r['operations'], 1):.2f} p50 {r['latency']['all']['p50_us']:.1f} "
      f"p99 {r['latency']['all']['p99_us']:.1f} errors {r['errors']}")
PY
}

echo "== forwarded against direct: two nodes on CPU $SERVER_CPU, load on CPU $LOAD_CPU, $ROUNDS rounds" >&2
A=127.0.0.2:31911 B=127.0.0.3:31912
start_nodes "$A:1,$B:1000" "--copies 1"
"$LOADGEN" run -s "$B" --cpus "$LOAD_CPU" -c 20 --keys 100000 --value-size 32 --prefill --requests 1 \
    --warmup 0 >/dev/null 2>&1
for round in $(seq 1 "$ROUNDS"); do
    for target in direct forwarded; do
        server=$B
        [ "$target" = forwarded ] && server=$A
        before=$(cpu_ticks)
        "$LOADGEN" run -s "$server" --cpus "$LOAD_CPU" -c 20 --keys 100000 --value-size 32 --get 9 --set 1 \
            --rate "$RATE" --duration "$DURATION" --warmup 0.5 --json "$work/r.json" >/dev/null 2>&1
        report "$work/r.json" "$round" "$target" open "$(($(cpu_ticks) - before))"
        before=$(cpu_ticks)
        "$LOADGEN" run -s "$server" --cpus "$LOAD_CPU" -c 20 --pipeline 8 --keys 100000 --value-size 32 \
            --get 9 --set 1 --duration "$DURATION" --warmup 0.5 --json "$work/r.json" >/dev/null 2>&1
        report "$work/r.json" "$round" "$target" closed "$(($(cpu_ticks) - before))"
    done
done | tee "$work/runs" >&2
stop_nodes
python3 - "$work/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    runs.setdefault((f[2], f[3]), []).append((float(f[5]), float(f[7]), float(f[9]), float(f[11])))
def med(key, i):
    return statistics.median(r[i] for r in runs[key])
for mode in ("open", "closed"):
    d, w = ("direct", mode), ("forwarded", mode)
    print(f"{mode:6} direct: {med(d, 0):.0f} ops/s, {med(d, 1):.2f} us/op server CPU, p50 {med(d, 2):.0f} us, p99 {med(d, 3):.0f} us")
    print(f"{mode:6} forwarded: {med(w, 0):.0f} ops/s, {med(w, 1):.2f} us/op server CPU, p50 {med(w, 2):.0f} us, p99 {med(w, 3):.0f} us")
    print(f"{mode:6} forwarded/direct: throughput {med(w, 0) / med(d, 0):.2f}x, CPU per op {med(w, 1) / med(d, 1):.2f}x")
PY

echo "== replication lag: three nodes, --copies 2, sets at $LAG_RATE/s through node 0" >&2
start_nodes "127.0.0.2:31921:1,127.0.0.3:31922:1,127.0.0.4:31923:1" ""
before=$(cpu_ticks)
"$LOADGEN" run -s 127.0.0.2:31921 --cpus "$LOAD_CPU" -c 20 --keys 100000 --value-size 32 --get 1 --set 1 \
    --rate "$LAG_RATE" --duration "$DURATION" --warmup 0.5 --json "$work/r.json" >/dev/null 2>&1
report "$work/r.json" 1 cluster-of-3 open "$(($(cpu_ticks) - before))"
for port in 31921 31922 31923; do
    python3 - "$port" <<'PY'
import socket, sys
port = int(sys.argv[1])
host = {31921: "127.0.0.2", 31922: "127.0.0.3", 31923: "127.0.0.4"}[port]
s = socket.create_connection((host, port))
s.sendall(b"stats replication\r\n")
buf = b""
while not buf.endswith(b"END\r\n"):
    buf += s.recv(65536)
stats = dict(line.split()[1:3] for line in buf.decode().splitlines() if line.startswith("STAT "))
print(f"node {host}:{port}: copies it sent acknowledged after p50 {int(stats['lag_p50_us']) / 1000:.2f} ms, "
      f"p99 {int(stats['lag_p99_us']) / 1000:.2f} ms, max {int(stats['lag_max_us']) / 1000:.2f} ms "
      f"({stats['lag_samples']} samples)")
PY
done
stop_nodes

echo "== write latency by consistency level: three nodes, --copies 3, $WRITES writes each, one at a time" >&2
start_nodes "127.0.0.2:31931:1,127.0.0.3:31932:1,127.0.0.4:31933:1" "--copies 3"
taskset -c "$LOAD_CPU" python3 - "$WRITES" <<'PY'
import socket, statistics, sys, time
writes = int(sys.argv[1])
s = socket.create_connection(("127.0.0.2", 31931))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def ask(data, replies):
    s.sendall(data)
    buf = b""
    while buf.count(b"\r\n") < replies:
        buf += s.recv(65536)
    return buf
for name, wait in (("ONE", b""), ("QUORUM (wait 2)", b"wait 2 1000\r\n"), ("ALL (wait 3)", b"wait 3 1000\r\n")):
    took = []
    short = 0
    for i in range(writes):
        request = f"set lat{i} 0 0 8\r\n{i:08d}\r\n".encode() + wait
        started = time.perf_counter()
        reply = ask(request, 2 if wait else 1)
        took.append((time.perf_counter() - started) * 1e6)
        if wait and int(reply.split(b"COPIES ")[1]) < int(wait.split()[1]):
            short += 1
    took.sort()
    p = lambda q: took[min(len(took) - 1, int(q * len(took)))]
    print(f"{name}: p50 {p(0.5):.0f} us, p99 {p(0.99):.0f} us, max {took[-1]:.0f} us"
          + (f", {short} below the count asked" if wait else ""))
PY
stop_nodes
