#!/usr/bin/env bash
# memcached 1.6.45's own t/ suite (../shared/memcached-tests) against corecache,
# the @core and @stats groups, with -t 1 and -t 2. Exit status: non-zero if
# any file fails.
#
#   tests/conformance/memcached-suite.sh [corecache binary] [memcached-tests/run.sh]
#
# A few files assert memcached internals that corecache does not have; they
# are left out here, each with the reason (README "Differences from memcached"):
#   issue_42   items:1:mem_requested > 500 for ten 10-byte items: memcached's
#              48-byte item header; corecache's items are smaller (30 bytes).
#   issue_163  items:31:reclaimed, issue_22 items:31:evicted: slab class 31 is
#              where memcached's -f 1.25 puts 66 KB items; corecache's classes
#              (-f 1.08) number differently. Reclaim and eviction themselves are
#              covered by corecache's own tests.
#   64bit      T_MEMD_INITIAL_MALLOC fakes memcached's malloc total (a debug hook).
#   dash-M     (-t 2 only) after one -M "out of memory" the next key must fail
#              too: with two cores each owns half of -m, so a key of the other
#              core may still fit. It passes with -t 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=${1:-target/debug/corecache}
runner=${2:-../shared/memcached-tests/run.sh}
suite=$(dirname "$runner")
[ -x "$binary" ] || { echo "no corecache binary at $binary (cargo build first)" >&2; exit 2; }
[ -x "$suite/run.sh" ] || { echo "no memcached test suite at $suite" >&2; exit 2; }

groups=$("$suite/run.sh" --list | sed -n 's/^@core: *//p; s/^@stats: *//p' | tr '\n' ' ')
files_but() {
    local skip=" $1 " name out=()
    for name in $groups; do
        case "$skip" in *" $name "*) ;; *) out+=("$name") ;; esac
    done
    echo "${out[@]}"
}
internal="issue_42 issue_163 issue_22 64bit"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {  # run <threads> <files...>: the files through prove, output kept in $log
    local threads=$1
    shift
    MC_EXTRA_ARGS="-t $threads" TEST_TIMEOUT=${TEST_TIMEOUT:-120} SHOW_CMDLINES=0 \
        "$suite/run.sh" "$binary" "$@" 2>&1 | tee "$log"
    return "${PIPESTATUS[0]}"
}
status=0
for threads in 1 2; do
    skip=$internal
    [ "$threads" = 2 ] && skip="$skip dash-M"
    echo "== memcached t/ suite, corecache -t $threads (left out: $skip)"
    # shellcheck disable=SC2046
    run "$threads" $(files_but "$skip") && continue
    # Some files race the one-second clock (binary.t stores with exptime 1
    # and then touches: when a second boundary falls between the two the
    # item has expired, as it does with memcached, about 1 in 5000 tries).
    # A file that fails is run once more; failing twice fails the suite.
    failed=$(sed -n 's|^t/\([A-Za-z0-9_-]*\)\.t  *(Wstat.*|\1|p' "$log" | tr '\n' ' ')
    [ -n "$failed" ] || { status=1; continue; }
    echo "== corecache -t $threads: again, once: $failed"
    # shellcheck disable=SC2086
    run "$threads" $failed || status=1
done
exit $status
