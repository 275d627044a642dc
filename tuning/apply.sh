#!/usr/bin/env bash
# Applies the host changes `corecache check-host --fixes` recommends for the
# given server flags. Every change is printed first; with --dry-run nothing
# is changed, without it exactly the printed commands run (as root).
#
#   tuning/apply.sh --dry-run --cores 1-3 -c 4096
#   sudo tuning/apply.sh --cores 1-3 -c 4096
set -euo pipefail
dry_run=false
args=()
for arg in "$@"; do
    if [ "$arg" = --dry-run ]; then dry_run=true; else args+=("$arg"); fi
done
corecache=${CORECACHE:-$(command -v corecache || echo "$(dirname "$0")/../target/release/corecache")}
mapfile -t fixes < <("$corecache" check-host --fixes "${args[@]}")
if [ ${#fixes[@]} -eq 0 ]; then
    echo "nothing to change"
    exit 0
fi
for fix in "${fixes[@]}"; do
    if $dry_run; then
        echo "would run: $fix"
    else
        echo "running: $fix"
        sh -c "$fix"
    fi
done
