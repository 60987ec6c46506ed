#!/usr/bin/env python3
"""Medians per (scenario, payload, target) of matrix JSONL files, as a
Markdown table, with wsgate's ratio against each peer. Invalid rows (lost,
duplicated or errors) are left out and counted. Fan-out rows also get the
server's CPU per delivery (µs), and a second table gives, per payload size,
wsgate's CPU per delivery over uws's when both are present.

    python3 loadtest/summarize.py loadtest/results/matrix-*.jsonl"""
import json
import statistics
import sys
from collections import defaultdict

METRICS = {
    "connect": [("handshakes_per_s", "handshakes/s", True), ("rss_per_conn_kib", "RSS KiB/conn", False)],
    "fanout": [
        ("ttl_p99_ms", "last-subscriber p99 ms", False),
        ("latency_p50_ms", "delivery p50 ms", False),
        ("server_cpu_us_per_delivery", "server CPU µs/delivery", False),
    ],
    "throughput": [("deliveries_per_s", "deliveries/s", True), ("latency_p99_ms", "p99 ms", False)],
    "ping": [("round_trips_per_s", "round trips/s", True), ("rtt_p99_ms", "RTT p99 ms", False)],
    "churn": [("cycles_per_s", "cycles/s", True), ("rss_end_kib", "RSS end KiB", False)],
}


def cpu_us_per_delivery(r):
    """µs of server CPU per delivered message: `server_cpu_s` over
    `deliveries`; older rows without it use `server_cpu_pct` x `phase_s`."""
    deliveries = r.get("deliveries")
    cpu_s = r.get("server_cpu_s")
    if cpu_s is None and r.get("server_cpu_pct") is not None and r.get("phase_s"):
        cpu_s = r["server_cpu_pct"] / 100 * r["phase_s"]
    if cpu_s is None or not deliveries:
        return None
    return cpu_s / deliveries * 1e6


def read(paths):
    rows = defaultdict(list)
    invalid = defaultdict(int)
    for path in paths:
        for line in open(path):
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            key = (r["scenario"], r.get("payload_bytes"), r["target"])
            if not r.get("valid", False):
                invalid[key] += 1
                continue
            if r["scenario"] == "fanout":
                cpu = cpu_us_per_delivery(r)
                if cpu is not None:
                    r["server_cpu_us_per_delivery"] = cpu
            rows[key].append(r)
    return rows, invalid


def median_of(rows, key, field):
    values = [r[field] for r in rows.get(key, []) if r.get(field) is not None]
    return (statistics.median(values), len(values)) if values else (None, 0)


def cpu_ratio_table(rows):
    """Per fan-out payload size: wsgate's CPU per delivery over uws's
    (below 1: wsgate spends less)."""
    sizes = sorted({k[1] for k in rows if k[0] == "fanout"} - {None})
    field = "server_cpu_us_per_delivery"
    lines = []
    for size in sizes:
        ws, n_ws = median_of(rows, ("fanout", size, "wsgate"), field)
        uws, n_uws = median_of(rows, ("fanout", size, "uws"), field)
        if ws is None or uws is None:
            continue
        lines.append(f"| {size} B | {ws:.2f} [n={n_ws}] | {uws:.2f} [n={n_uws}] | {ws / uws:.2f} |")
    if lines:
        print("\n| fan-out payload | wsgate CPU µs/delivery | uws CPU µs/delivery | wsgate/uws |")
        print("|---|---|---|---|")
        print("\n".join(lines))


def main(paths):
    rows, invalid = read(paths)
    targets = sorted({k[2] for k in rows} | {k[2] for k in invalid}, key=lambda t: (t != "wsgate", t))
    groups = sorted({(k[0], k[1]) for k in rows}, key=lambda g: (list(METRICS).index(g[0]) if g[0] in METRICS else 99, g[1] or 0))
    print("| scenario | measure | " + " | ".join(targets) + " |")
    print("|---|---|" + "---|" * len(targets))
    for scenario, payload in groups:
        for field, label, higher_better in METRICS.get(scenario, []):
            cells = []
            ws_med, _ = median_of(rows, (scenario, payload, "wsgate"), field)
            for t in targets:
                med, n = median_of(rows, (scenario, payload, t), field)
                if med is None:
                    cells.append("invalid" if invalid.get((scenario, payload, t)) else "-")
                    continue
                cell = f"{med:,.2f}" if med < 100 else f"{med:,.0f}"
                if t != "wsgate" and ws_med and med:
                    ratio = ws_med / med if higher_better else med / ws_med
                    cell += f" (wsgate {ratio:.1f}x)"
                cell += f" [n={n}]"
                cells.append(cell)
            name = scenario + (f" {payload} B" if payload else "")
            print(f"| {name} | {label} | " + " | ".join(cells) + " |")
    cpu_ratio_table(rows)
    if invalid:
        print("\nInvalid rows left out: " + ", ".join(f"{k[2]} {k[0]} {k[1] or ''}: {n}" for k, n in invalid.items()))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: summarize.py MATRIX.jsonl [MORE.jsonl...]")
    main(sys.argv[1:])
