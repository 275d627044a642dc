#!/bin/bash
# malloc-count.sh BINARY LABEL: mallocs per request of corecache --cores 0,0 (half the keys forwarded)
bin=$1; label=$2; port=31714
$bin --cores 0,0 -m 256 -p $port -l 127.0.0.1 >/dev/null 2>&1 &
pid=$!
sleep 0.5
L=/work/main/target/release/corecache-loadgen
$L run -s 127.0.0.1:$port --cpus 1 -c 20 --keys 100000 --value-size 32 --prefill --requests 1 --warmup 0 >/dev/null 2>&1
for args in "--pipeline 1" "--pipeline 16" "--pipeline 1 --multiget 10"; do
  n=200000
  count=$(perf stat -x, -e probe_libc:malloc -p $pid -- $L run -s 127.0.0.1:$port --cpus 1 -c 20 --keys 100000 --value-size 32 --get 10 --set 1 $args --requests $n --warmup 0 2>&1 >/dev/null | grep probe_libc | cut -d, -f1)
  python3 -c "print('$label', '$args'.ljust(28), 'mallocs per request: %.2f' % ($count / $n))"
done
kill $pid; wait $pid 2>/dev/null
