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
# of A and of B, the ratio A/B of the medians, and a verdict: "A faster"/"B faster" when
# the spreads do not overlap, else "no difference the noise can show".
#
# Environment: PULLGATE_E2E_BLOB_MIB (default here 256), PULLGATE_E2E_ROUNDS (3),
# PULLGATE_E2E_COLD_ROUNDS (2), PULLGATE_E2E_LOAD_SECS (5), AB_PHASES. One e2e run of
# these sizes takes about 2 minutes on 2 cores, so RUNS=4 is about 16 minutes plus builds.
# REV's bench must understand PULLGATE_E2E_ONLY and write target/bench-e2e.json (every
# commit since c7638c8 does).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
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

python3 - "$out" "$runs" "$short" "$head$dirty" <<'EOF'
import json, statistics, sys
out, runs, b_name, a_name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
# (label, target, path in its results, higher is better)
paths = [
    ("cold GET, 1 client (GB/s)", "pullgate_files", ("cold_1", "gbps"), True),
    ("cold GET, 8 clients (GB/s)", "pullgate_files", ("cold_8", "gbps"), True),
    ("warm GET, 1 client (GB/s)", "pullgate_files", ("warm_1_gbps_median",), True),
    ("warm GET, 8 clients (GB/s)", "pullgate_files", ("warm_8_gbps_median",), True),
    ("manifest by tag (req/s)", "pullgate_files", ("manifest_tag", "rps"), True),
    ("manifest by digest (req/s)", "pullgate_files", ("manifest_digest", "rps"), True),
    ("manifest by digest, p99 (ms)", "pullgate_files", ("manifest_digest", "p99_ms"), False),
    ("distribution warm GET, 1 client (GB/s)", "distribution", ("warm_1_gbps_median",), True),
    ("nginx warm GET, 1 client (GB/s)", "nginx", ("warm_1_gbps_median",), True),
]
def value(doc, target, path):
    v = doc.get("results", {}).get(target)
    for k in path:
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return float(v) if isinstance(v, (int, float)) else None
docs = {s: [json.load(open(f"{out}/{s}-{n}.json")) for n in range(1, runs + 1)] for s in "AB"}
print(f"A = {a_name} (working tree), B = {b_name}; {runs} runs each, alternating B A; JSON in {out}\n")
print("| path | A median | A min-max | B median | B min-max | A/B | verdict |")
print("|---|---|---|---|---|---|---|")
fmt = lambda v: f"{v:.0f}" if v >= 100 else f"{v:.2f}"
for label, target, path, higher in paths:
    a = [v for v in (value(d, target, path) for d in docs["A"]) if v is not None]
    b = [v for v in (value(d, target, path) for d in docs["B"]) if v is not None]
    if not a or not b:
        print(f"| {label} | – | – | – | – | – | not measured by both |")
        continue
    am, bm = statistics.median(a), statistics.median(b)
    if min(a) > max(b):
        verdict = "A higher" + (" (better)" if higher else " (worse)")
    elif max(a) < min(b):
        verdict = "B higher" + (" (A worse)" if higher else " (A better)")
    else:
        verdict = "no difference the noise can show"
    ratio = am / bm if bm else float("nan")
    print(f"| {label} | {fmt(am)} | {fmt(min(a))}–{fmt(max(a))} | {fmt(bm)} | {fmt(min(b))}–{fmt(max(b))} | {ratio:.2f}× | {verdict} |")
EOF
