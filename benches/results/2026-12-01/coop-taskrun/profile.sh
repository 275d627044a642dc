#!/bin/bash
# profile.sh BINARY NAME [loadgen args...]: perf cpu-clock profile of a corecache -t 1 on CPU 0 under load on CPU 1
bin=$1; name=$2; shift 2
port=31711
$bin -t 1 --cores 0 -m 1024 -p $port -l 127.0.0.1 2>/dev/null &
pid=$!
sleep 0.5
L=/work/main/target/release/corecache-loadgen
$L run -s 127.0.0.1:$port --cpus 1 -c 20 --keys 100000 --value-size 32 --prefill --requests 1 --warmup 0 >/dev/null 2>&1
$L run -s 127.0.0.1:$port --cpus 1 -c 20 --keys 100000 --value-size 32 --get 10 --set 1 --duration 6 --warmup 0 "$@" >/tmp/prof-$name.load 2>&1 &
lp=$!
sleep 1
perf record -e cpu-clock -F 4999 -g -p $pid -o /tmp/prof-$name.data -- sleep 4 2>/dev/null >/dev/null
wait $lp
kill $pid; wait $pid 2>/dev/null
perf report -i /tmp/prof-$name.data --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 > /tmp/prof-$name.txt
