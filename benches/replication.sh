#!/usr/bin/env bash
# What replication costs the primary, measured side by side in one run:
#
# 1. write throughput with replication off (no --repl-port) and on (one
#    replica following), alternating rounds: closed loop set-only at
#    pipeline 16, and an open loop of sets at a fixed rate; primary ops/s,
#    primary CPU per op (all its threads), and the replication lag the
#    primary measured (chunk reaching the backlog -> replica's ack), p50/p99;
# 2. the snapshot's effect on the primary's p99: an open loop of gets and
#    sets against a primary holding ITEMS items, without a replica and with
#    one that starts (and fully resyncs) during the measured run.
#
# The machine has two CPUs: the primary's worker on CPU 0; its replication
# core (--repl-core 1), the replica and the load generator on CPU 1. In the
# snapshot runs the replica (standing for another host) runs SCHED_IDLE so
# that the load generator keeps its CPU; SNAPSHOT_LAYOUT=confined puts the
# whole primary, replication core included, on CPU 0 instead. The snapshot
# run's rate (MIXED_RATE, 20k/s) keeps the worker about 70% busy: at 40k/s
# unpipelined it is already ~90% busy without any replica.
#
#   benches/replication.sh
#   ROUNDS=5 OUT=benches/results/2026-11-23 benches/replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WRITE_RATE=${WRITE_RATE:-40000}
MIXED_RATE=${MIXED_RATE:-20000}
ITEMS=${ITEMS:-1000000}
OUT=${OUT:-target/replication}
PRIMARY=127.0.0.2
REPLICA=127.0.0.3
PORT=${PORT:-31711}
REPL_PORT=${REPL_PORT:-31811}
METRICS_PORT=${METRICS_PORT:-31911}
mkdir -p "$OUT"
cargo build --release --workspace >&2
CORECACHE=${CORECACHE:-target/release/corecache} # another build (a before) to compare
LOADGEN=target/release/corecache-loadgen
TICKS=$(getconf CLK_TCK)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_ready() { # HOST PORT
    for _ in $(seq 1 200); do
        if python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
s.sendall(b"version\r\n")
sys.exit(0 if s.recv(8) == b"VERSION " else 1)' "$1" "$2" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "no server on $1:$2" >&2
    exit 1
}

stat() { # HOST NAME -> value from `stats replication`
    python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[3])), timeout=2)
s.sendall(b"stats replication\r\n")
data = b""
while not data.endswith(b"END\r\n"):
    data += s.recv(65536)
for line in data.decode().splitlines():
    parts = line.split(" ")
    if len(parts) == 3 and parts[1] == sys.argv[2]:
        print(parts[2])' "$1" "$2" "$PORT"
}

start_primary() { # MODE(off|on|confined) [extra args...]
    local mode=$1
    shift
    local repl=() pin=()
    case $mode in
    on) repl=(--repl-port "$REPL_PORT" --repl-core 1) ;;
    # The whole primary on CPU 0: its replication core floats within the mask.
    confined) repl=(--repl-port "$REPL_PORT") pin=(taskset -c 0) ;;
    esac
    "${pin[@]}" "$CORECACHE" -t 1 --cores 0 -m 2048 -l "$PRIMARY" -p "$PORT" "${repl[@]}" "$@" 2>>"$OUT/server.log" &
    PRIMARY_PID=$!
    wait_ready "$PRIMARY" "$PORT"
}

# The replica stands for another host; on this two-CPU machine it shares CPU 1
# with the load generator and the primary's replication core.
start_replica() { # [idle]
    local idle=()
    [ "${1:-}" = idle ] && idle=(chrt --idle 0)
    "${idle[@]}" taskset -c 1 "$CORECACHE" -t 1 --cores 1 -m 2048 -l "$REPLICA" -p "$PORT" --replica-of "$PRIMARY:$REPL_PORT" 2>>"$OUT/server.log" &
    REPLICA_PID=$!
    wait_ready "$REPLICA" "$PORT"
}

stop_all() {
    kill "${PRIMARY_PID:-}" "${REPLICA_PID:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    PRIMARY_PID="" REPLICA_PID=""
}
trap stop_all EXIT

row() { # JSON ROUND MODE WORKLOAD TICKS LAG50 LAG99
    python3 - "$@" "$TICKS" <<'PY'
import json, sys
path, round_, mode, workload, ticks, lag50, lag99, hz = sys.argv[1:]
r = json.load(open(path))
run_ops = r["operations"] * (1 + 1 / r["seconds"])  # warm-up of 1 s included in the CPU ticks
a = r["latency"]["all"]
print(f"{round_}\t{mode}\t{workload}\t{r['ops_per_sec']:.0f}\t{a['p50_us']:.1f}\t{a['p99_us']:.1f}\t{a['p999_us']:.1f}\t{int(ticks) / int(hz) * 1e6 / run_ops:.2f}\t{lag50}\t{lag99}")
if r["errors"]:
    print(f"errors in {path}: {r['errors']}", file=sys.stderr)
PY
}

results="$OUT/replication.tsv"
echo -e "round\tmode\tserver_get_p99_us" >"$OUT/server-get-p99.tsv"
echo -e "round\tmode\tworkload\tops_per_sec\tp50_us\tp99_us\tp999_us\tprimary_cpu_us_per_op\tlag_p50_us\tlag_p99_us" >"$results"
common=(-c 20 --keys 100000 --value-size 32 --duration "$DURATION" --warmup 1 --cpus 1)
for round in $(seq 1 "$ROUNDS"); do
    for mode in $([ -n "${SNAPSHOT_ONLY:-}" ] || echo off on); do
        for workload in write-p16 write-open; do
            start_primary "$mode"
            [ "$mode" = on ] && start_replica
            case $workload in
            write-p16) args=(--get 0 --set 1 --pipeline 16) ;;
            write-open) args=(--get 0 --set 1 --rate "$WRITE_RATE") ;;
            esac
            json="$OUT/$mode-$workload-$round.json"
            before=$(ticks "$PRIMARY_PID")
            "$LOADGEN" run -s "$PRIMARY:$PORT" "${common[@]}" "${args[@]}" --json "$json" >/dev/null 2>>"$OUT/loadgen.log"
            after=$(ticks "$PRIMARY_PID")
            lag50=- lag99=-
            if [ "$mode" = on ]; then
                sleep 0.5
                lag50=$(stat "$PRIMARY" lag_p50_us)
                lag99=$(stat "$PRIMARY" lag_p99_us)
            fi
            row "$json" "$round" "$mode" "$workload" "$((after - before))" "$lag50" "$lag99" | tee -a "$results" >&2
            stop_all
        done
    done
    # The snapshot's effect: a mixed open loop on a primary holding ITEMS items;
    # in "snapshot" mode a replica starts 1 s into the run and resyncs fully.
    for mode in nosnapshot snapshot; do
        start_primary ${SNAPSHOT_LAYOUT:-on} --metrics-port "$METRICS_PORT"
        "$LOADGEN" run -s "$PRIMARY:$PORT" --cpus 1 -c 20 --keys "$ITEMS" --value-size 32 --prefill --requests 1 --warmup 0 \
            >/dev/null 2>>"$OUT/loadgen.log"
        json="$OUT/$mode-mixed-open-$round.json"
        before=$(ticks "$PRIMARY_PID")
        "$LOADGEN" run -s "$PRIMARY:$PORT" --cpus 1 -c 20 --keys "$ITEMS" --value-size 32 --get 10 --set 1 \
            --rate "$MIXED_RATE" --duration "$DURATION" --warmup 1 --json "$json" >/dev/null 2>>"$OUT/loadgen.log" &
        load=$!
        if [ "$mode" = snapshot ]; then
            sleep 2
            started=$(date +%s.%N)
            # The replica stands for another host: SCHED_IDLE, so that the load
            # generator on the same CPU is not starved while it applies the snapshot.
            start_replica idle
            until [ "$(stat "$REPLICA" link)" = up ]; do sleep 0.05; done
            echo "full resync of $ITEMS items: $(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')") s" | tee -a "$OUT/snapshot.txt" >&2
        fi
        wait "$load"
        after=$(ticks "$PRIMARY_PID")
        row "$json" "$round" "$mode" mixed-open "$((after - before))" - - | tee -a "$results" >&2
        # The primary's own view: get latency from parse to reply written, p99.
        server_p99=$(curl -s "http://$PRIMARY:$METRICS_PORT/metrics" |
            awk -F' ' '/corecache_request_duration_seconds\{command="get",quantile="0.99"\}/ {printf "%.1f", $2 * 1e6}')
        echo -e "$round\t$mode\t$server_p99" >>"$OUT/server-get-p99.tsv"
        echo "primary's own get p99 ($mode): $server_p99 us" >&2
        if [ "$mode" = snapshot ]; then
            echo "round $round: snapshot slices $(stat "$PRIMARY" snapshot_slices), each held the core p50 $(stat "$PRIMARY" snapshot_slice_p50_us) us, max $(stat "$PRIMARY" snapshot_slice_max_us) us" |
                tee -a "$OUT/snapshot.txt" >&2
        fi
        stop_all
    done
done

python3 - "$results" "$OUT/server-get-p99.tsv" <<'PY' | tee "$OUT/replication-summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def median(mode, workload, field):
    values = [float(r[field]) for r in rows if r["mode"] == mode and r["workload"] == workload and r[field] != "-"]
    return statistics.median(values) if values else float("nan")
rounds = len(set(r["round"] for r in rows))
print(f"medians of {rounds} alternating rounds")
print(f"{'workload':12} {'mode':11} {'ops/s':>9} {'p50 us':>8} {'p99 us':>8} {'p99.9':>8} {'cpu us/op':>9} {'lag p50':>8} {'lag p99':>8}")
for workload, modes in [("write-p16", ["off", "on"]), ("write-open", ["off", "on"]), ("mixed-open", ["nosnapshot", "snapshot"])]:
    for mode in modes:
        m = [median(mode, workload, f) for f in ["ops_per_sec", "p50_us", "p99_us", "p999_us", "primary_cpu_us_per_op", "lag_p50_us", "lag_p99_us"]]
        print(f"{workload:12} {mode:11} {m[0]:9.0f} {m[1]:8.1f} {m[2]:8.1f} {m[3]:8.1f} {m[4]:9.2f} {m[5]:8.0f} {m[6]:8.0f}")
    a, b = modes
    ratio = [median(b, workload, f) / max(median(a, workload, f), 1e-9) for f in ["ops_per_sec", "p50_us", "p99_us", "p999_us", "primary_cpu_us_per_op"]]
    print(f"{workload:12} {b + '/' + a:11} {ratio[0]:8.2f}x {ratio[1]:7.2f}x {ratio[2]:7.2f}x {ratio[3]:7.2f}x {ratio[4]:8.2f}x")
server = list(csv.DictReader(open(sys.argv[2]), delimiter="\t"))
for mode in ["nosnapshot", "snapshot"]:
    values = [float(r["server_get_p99_us"]) for r in server if r["mode"] == mode and r["server_get_p99_us"]]
    if values:
        print(f"primary's own get p99 (parse to reply written), {mode}: {statistics.median(values):.1f} us")
PY
