#!/bin/bash
# mgtest.sh LABEL [env...]: corecache -t 1 on CPU 0, multiget10 for 5 s, prints ops/s, server CPU/op, AnonHugePages
label=$1; shift
port=31712
env "$@" ${BIN:-/work/main/target/release/corecache} -t 1 --cores 0 -m 1024 -p $port -l 127.0.0.1 2>/dev/null &
pid=$!
sleep 0.5
L=/work/main/target/release/corecache-loadgen
$L run -s 127.0.0.1:$port --cpus 1 -c 20 --keys ${KEYS:-100000} --value-size 32 --prefill --requests 1 --warmup 0 >/dev/null 2>&1
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
$L run -s 127.0.0.1:$port --cpus 1 -c 20 --keys ${KEYS:-100000} --value-size 32 --get 10 --set 1 --duration 5 --warmup 0 ${ARGS:---multiget 10} --json /tmp/mg.json >/dev/null 2>&1
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
python3 -c "
import json; r=json.load(open('/tmp/mg.json')); print('$label', 'ops/s %.0f'%r['ops_per_sec'], 'srv us/op %.2f'%(($t1-$t0)/100*1e6/r['operations']), 'p99 %.0f'%r['latency']['all']['p99_us'])"
grep -E "AnonHuge|^Rss" /proc/$pid/smaps_rollup | tr '\n' ' '; echo
kill $pid; wait $pid 2>/dev/null
