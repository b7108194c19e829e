#!/usr/bin/env python3
"""The tables benches/ab.sh prints: A (the working tree) against B (REV) per path, with
medians, min-max spreads, the ratio and a verdict, then each side against the peers
(distribution's proxy, nginx) measured in the same runs.

    python3 benches/ab_summary.py RUNS_DIR RUNS B_NAME A_NAME

RUNS_DIR holds A-1.json .. A-RUNS.json and B-1.json .. (the e2e bench's JSON).
"""
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

# The peers in the same runs: each side's ratio to distribution's proxy and to nginx, run by
# run (a peer measured in the same run shares that run's drift), and the median ratio.
peers = [
    ("cold GET, 1 client / distribution", ("cold_1", "gbps"), "distribution"),
    ("cold GET, 8 clients / distribution", ("cold_8", "gbps"), "distribution"),
    ("warm GET, 1 client / distribution", ("warm_1_gbps_median",), "distribution"),
    ("warm GET, 1 client / nginx", ("warm_1_gbps_median",), "nginx"),
    ("warm GET, 8 clients / distribution", ("warm_8_gbps_median",), "distribution"),
    ("manifest by digest req/s / nginx", ("manifest_digest", "rps"), "nginx"),
    ("manifest by digest p99 / nginx (lower is better)", ("manifest_digest", "p99_ms"), "nginx"),
]
print("\nEach side against the peers in the same runs (pullgate / peer, per run):\n")
print("| ratio | A per run | A median | B per run | B median |")
print("|---|---|---|---|---|")
for label, path, peer in peers:
    cells = []
    for side in "AB":
        rs = []
        for d in docs[side]:
            pg, other = value(d, "pullgate_files", path), value(d, peer, path)
            if pg is not None and other:
                rs.append(pg / other)
        cells.append((" ".join(f"{r:.2f}" for r in rs) or "–", f"{statistics.median(rs):.2f}×" if rs else "–"))
    print(f"| {label} | {cells[0][0]} | {cells[0][1]} | {cells[1][0]} | {cells[1][1]} |")
cdn = [value(d, "pullgate_files", ("cold_8", "cdn_fetches")) for d in docs["A"]]
print(f"\nA's CDN fetches for 8 cold clients, per run: {' '.join(str(int(c)) if c is not None else '–' for c in cdn)}")
