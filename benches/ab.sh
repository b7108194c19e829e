#!/usr/bin/env bash
# A/B of the hot paths: REV against the working tree, the same e2e bench, alternating.
#
#   benches/ab.sh REV [RUNS]        # RUNS each, default 4: B A B A ... (B = REV)
#
# REV is built in a git worktree under target/ab/<sha> with its own target directory (kept,
# so a second A/B against the same REV builds nothing); the working tree (A, what you are
# about to commit) is built in ./target. Each run is `cargo bench --bench e2e` with
# PULLGATE_E2E_ONLY=cold,warm,manifests (override with AB_PHASES), alternating B and A so
# that drift of the machine (thermal, page cache, a neighbour) falls on both. Every run's
# JSON is kept under target/ab/runs/<stamp>/. At the end, per path: the median and min-max
# of A and of B, the ratio A/B of the medians, and a verdict: "A higher"/"B higher" when
# the spreads do not overlap, else "no difference the noise can show". Then each side's
# ratio to distribution's proxy and to nginx in the same runs (the targets of issue 23 are
# such ratios), run by run, and A's CDN fetches for 8 cold clients.
#
# Environment: PULLGATE_E2E_BLOB_MIB (default here 256), PULLGATE_E2E_ROUNDS (3),
# PULLGATE_E2E_COLD_ROUNDS (2), PULLGATE_E2E_LOAD_SECS (5), AB_PHASES. One e2e run of
# these sizes takes about 2 minutes on 2 cores, so RUNS=4 is about 16 minutes plus builds.
# REV's bench must understand PULLGATE_E2E_ONLY and write target/bench-e2e.json (every
# commit since c7638c8 does).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
rev=$1
runs=${2:-4}
case $runs in '' | *[!0-9]*) echo "ab.sh: RUNS must be a number, not '$runs'" >&2; exit 2 ;; esac
[ "$runs" -ge 1 ] || { echo "ab.sh: RUNS must be at least 1" >&2; exit 2; }
sha=$(git rev-parse --verify --quiet "$rev^{commit}") || { echo "ab.sh: '$rev' is not a commit here" >&2; exit 2; }
short=$(git rev-parse --short "$sha")
head=$(git rev-parse --short HEAD)
dirty=""
git diff --quiet HEAD -- || dirty="+changes"

export PULLGATE_E2E_ONLY=${AB_PHASES:-cold,warm,manifests}
export PULLGATE_E2E_BLOB_MIB=${PULLGATE_E2E_BLOB_MIB:-256}
export PULLGATE_E2E_ROUNDS=${PULLGATE_E2E_ROUNDS:-3}
export PULLGATE_E2E_COLD_ROUNDS=${PULLGATE_E2E_COLD_ROUNDS:-2}
export PULLGATE_E2E_LOAD_SECS=${PULLGATE_E2E_LOAD_SECS:-5}

root=$(pwd)
wt="$root/target/ab/$short"
if [ ! -d "$wt/.git" ] && [ ! -f "$wt/.git" ]; then
    mkdir -p "$root/target/ab"
    git worktree add --detach "$wt" "$sha" >/dev/null
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$root/target/ab/runs/$stamp"
mkdir -p "$out"

echo "ab.sh: building B = $short (worktree $wt) and A = $head$dirty (working tree)" >&2
(cd "$wt" && cargo bench --bench e2e --no-run --quiet)
cargo bench --bench e2e --no-run --quiet

one_run() { # side dir n
    local side=$1 dir=$2 n=$3
    echo "ab.sh: run $n of $runs, $side" >&2
    if ! (cd "$dir" && cargo bench --bench e2e --quiet >"$out/$side-$n.log" 2>&1); then
        echo "ab.sh: the $side run $n failed; its log: $out/$side-$n.log" >&2
        tail -20 "$out/$side-$n.log" >&2
        exit 1
    fi
    cp "$dir/target/bench-e2e.json" "$out/$side-$n.json"
}
for n in $(seq 1 "$runs"); do
    one_run B "$wt" "$n"
    one_run A "$root" "$n"
done

python3 benches/ab_summary.py "$out" "$runs" "$short" "$head$dirty"
