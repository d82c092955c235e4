#!/usr/bin/env python3
"""Draws the side-by-side chart (an SVG, no plotting library needed) from benches/sidebyside.sh's JSON file.

    python3 benches/chart.py [benches/sidebyside.json] [benches/sidebyside.svg]

Three panels: req/s of each target (median round), CPU time per request (median round), and p99 latency against
the offered load in the open-loop runs.
"""

import json
import sys
from html import escape
from statistics import median

COLORS = {
    "passthrough": "#6b7280",
    "nginx": "#059669",
    "envoy": "#d97706",
    "jitgate": "#2563eb",
    "jitgate-nolog": "#7c3aed",
}


def color(target):
    return COLORS.get(target, "#111827")


def bars(x0, y0, width, title, unit, values):
    """A horizontal bar chart of {target: value} at (x0, y0); returns (svg, height)."""
    out = [f'<text x="{x0}" y="{y0 + 14}" font-weight="bold">{escape(title)}</text>']
    top = max(values.values()) if values else 1
    label_w, bar_h, gap = 110, 18, 8
    y = y0 + 28
    for target, v in values.items():
        w = (width - label_w - 80) * (v / top if top else 0)
        out.append(f'<text x="{x0}" y="{y + 13}">{escape(target)}</text>')
        out.append(f'<rect x="{x0 + label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color(target)}"/>')
        out.append(f'<text x="{x0 + label_w + w + 6:.1f}" y="{y + 13}">{v:,.0f}{escape(unit)}</text>')
        y += bar_h + gap
    return "\n".join(out), y - y0


def lines(x0, y0, width, height, title, series):
    """p99 against offered load: {target: [(offered, p99)]}; returns svg."""
    out = [f'<text x="{x0}" y="{y0 + 14}" font-weight="bold">{escape(title)}</text>']
    pts = [p for s in series.values() for p in s]
    if not pts:
        return "\n".join(out)
    xmax = max(p[0] for p in pts) * 1.05
    ymax = max(p[1] for p in pts) * 1.15
    left, top, right, bottom = x0 + 50, y0 + 28, x0 + width - 120, y0 + height - 30
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#111827"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#111827"/>')
    out.append(f'<text x="{(left + right) / 2 - 60:.0f}" y="{bottom + 24}">offered load (req/s)</text>')
    out.append(f'<text x="{x0}" y="{top + 10}">p99 ms</text>')
    for i in range(5):
        v = ymax * i / 4
        y = bottom - (bottom - top) * i / 4
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:.2f}</text>')
        v = xmax * i / 4
        x = left + (right - left) * i / 4
        out.append(f'<text x="{x:.1f}" y="{bottom + 12}" text-anchor="middle" font-size="10">{v:,.0f}</text>')
    for n, (target, s) in enumerate(series.items()):
        s = sorted(s)
        coords = [(left + (right - left) * q / xmax, bottom - (bottom - top) * p / ymax) for q, p in s]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color(target)}" stroke-width="2"/>')
        for x, y in coords:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color(target)}"/>')
        out.append(f'<text x="{right + 10}" y="{top + 14 + 16 * n}" fill="{color(target)}">{escape(target)}</text>')
    return "\n".join(out)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "benches/sidebyside.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "benches/sidebyside.svg"
    data = json.load(open(src))
    targets = []
    for r in data["closed_loop"]:
        if r["target"] not in targets:
            targets.append(r["target"])

    def med(target, key):
        return median(r[key] for r in data["closed_loop"] if r["target"] == target)

    rps = {t: med(t, "rps") for t in targets}
    cpu = {t: med(t, "cpu_us_per_request") for t in targets}
    series = {}
    for r in data.get("open_loop", []):
        series.setdefault(r["target"], []).append((r["offered_rps"], r["p99_ms"]))
    width = 720
    a, ha = bars(10, 10, width, "req/s (closed loop, median round)", "", rps)
    b, hb = bars(10, 20 + ha, width, "CPU time per request (µs, all the proxy's threads)", " µs", cpu)
    c = lines(10, 30 + ha + hb, width, 260, "p99 latency against offered load (open loop)", series)
    height = 30 + ha + hb + 270
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 20}" height="{height}" '
        f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
        f"{a}\n{b}\n{c}\n"
        f'<text x="10" y="{height - 6}" font-size="10" fill="#6b7280">measured {escape(data["measured"])}, '
        f'{data["rounds"]} rounds of {data["duration_s"]} s, {data["connections"]} connections</text>\n</svg>\n'
    )
    open(dst, "w").write(svg)
    print(f"chart: {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
