#!/usr/bin/env python3
"""Medians per (scenario, payload, target) of a matrix JSONL file, as a
Markdown table, with wsgate's ratio against each peer. Invalid rows (lost,
duplicated or errors) are left out and counted."""
import json
import statistics
import sys
from collections import defaultdict

METRICS = {
    "connect": [("handshakes_per_s", "handshakes/s", True), ("rss_per_conn_kib", "RSS KiB/conn", False)],
    "fanout": [("ttl_p99_ms", "last-subscriber p99 ms", False), ("latency_p50_ms", "delivery p50 ms", False)],
    "throughput": [("deliveries_per_s", "deliveries/s", True), ("latency_p99_ms", "p99 ms", False)],
    "ping": [("round_trips_per_s", "round trips/s", True), ("rtt_p99_ms", "RTT p99 ms", False)],
    "churn": [("cycles_per_s", "cycles/s", True), ("rss_end_kib", "RSS end KiB", False)],
}


def main(path):
    rows = defaultdict(list)
    invalid = defaultdict(int)
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        key = (r["scenario"], r.get("payload_bytes"), r["target"])
        if not r.get("valid", False):
            invalid[key] += 1
            continue
        rows[key].append(r)
    targets = sorted({k[2] for k in rows} | {k[2] for k in invalid}, key=lambda t: (t != "wsgate", t))
    groups = sorted({(k[0], k[1]) for k in rows}, key=lambda g: (list(METRICS).index(g[0]) if g[0] in METRICS else 99, g[1] or 0))
    print("| scenario | measure | " + " | ".join(targets) + " |")
    print("|---|---|" + "---|" * len(targets))
    for scenario, payload in groups:
        for field, label, higher_better in METRICS.get(scenario, []):
            cells = []
            ws = rows.get((scenario, payload, "wsgate"), [])
            ws = [r for r in ws if field in r]
            ws_med = statistics.median([r[field] for r in ws]) if ws else None
            for t in targets:
                rs = [r for r in rows.get((scenario, payload, t), []) if field in r]
                if not rs:
                    cells.append("invalid" if invalid.get((scenario, payload, t)) else "-")
                    continue
                med = statistics.median([r[field] for r in rs])
                cell = f"{med:,.2f}" if med < 100 else f"{med:,.0f}"
                if t != "wsgate" and ws_med and med:
                    ratio = ws_med / med if higher_better else med / ws_med
                    cell += f" (wsgate {ratio:.1f}x)"
                cell += f" [n={len(rs)}]"
                cells.append(cell)
            name = scenario + (f" {payload} B" if payload else "")
            print(f"| {name} | {label} | " + " | ".join(cells) + " |")
    if invalid:
        print("\nInvalid rows left out: " + ", ".join(f"{k[2]} {k[0]} {k[1] or ''}: {n}" for k, n in invalid.items()))


if __name__ == "__main__":
    main(sys.argv[1])
