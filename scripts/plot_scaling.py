#!/usr/bin/env python3
"""Draws the scaling plots of docs/PERFORMANCE.md from the JSON the `scaling` example writes.

    cargo run --release -p nitro-core --example scaling -- --json > docs/plots/scaling.json
    python3 scripts/plot_scaling.py docs/plots/scaling.json docs/plots [--tables]

With --tables it also prints the Markdown tables of the Scaling section of docs/PERFORMANCE.md.
Plain Python, no dependency: the SVG is written by hand. On a log axis a value of 0 (no
standing guarantees) is drawn one decade below the smallest positive value and labelled 0.
"""

import json
import math
import sys
from pathlib import Path
from xml.sax.saxutils import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
PANEL_W, PANEL_H = 440, 330
MARGIN = {"left": 70, "right": 16, "top": 34, "bottom": 48}
LEGEND_H = 18


def nice_ticks_linear(lo, hi, count=5):
    span = hi - lo if hi > lo else 1.0
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 and math.isclose(v / 1e6, round(v / 1e6)):
        return f"{v / 1e6:g}M"
    if a >= 1e3 and math.isclose(v / 1e3, round(v / 1e3)):
        return f"{v / 1e3:g}k"
    return f"{v:g}"


class Axis:
    def __init__(self, values, log, lo_pix, hi_pix, pad=0.05, include=()):
        self.log = log
        vals = [v for v in list(values) + list(include) if v is not None]
        if log:
            pos = [v for v in vals if v > 0]
            self.minpos = min(pos)
            self.has_zero = any(v <= 0 for v in vals)
            lo = math.floor(math.log10(self.minpos)) - (1 if self.has_zero else 0)
            hi = math.ceil(math.log10(max(pos)))
            if hi == lo:
                hi += 1
            self.lo, self.hi = lo, hi
        else:
            lo, hi = min(vals), max(vals)
            span = (hi - lo) or abs(hi) or 1.0
            self.lo, self.hi = lo - pad * span, hi + pad * span
        self.lo_pix, self.hi_pix = lo_pix, hi_pix

    def t(self, v):
        if self.log:
            u = self.lo if v <= 0 else math.log10(v)
        else:
            u = v
        return self.lo_pix + (u - self.lo) / (self.hi - self.lo) * (self.hi_pix - self.lo_pix)

    def ticks(self):
        if self.log:
            out = []
            for e in range(int(self.lo), int(self.hi) + 1):
                if e == self.lo and self.has_zero:
                    out.append((0, "0"))
                else:
                    out.append((10**e, fmt(10**e)))
            return out
        return [(v, fmt(v)) for v in nice_ticks_linear(self.lo, self.hi)]


def panel(ox, oy, p):
    """One plot at (ox, oy). p: title, xlabel, ylabel, xlog, ylog, series, hlines."""
    left, top = ox + MARGIN["left"], oy + MARGIN["top"]
    right, bottom = ox + PANEL_W - MARGIN["right"], oy + PANEL_H - MARGIN["bottom"]
    xs = [x for s in p["series"] for x in s["x"]]
    ys = [y for s in p["series"] for y in s["y"]] + [h["y"] for h in p.get("hlines", [])]
    xa = Axis(xs, p.get("xlog", False), left, right, pad=0.03)
    ya = Axis(ys, p.get("ylog", False), bottom, top, include=p.get("yinclude", ()))
    out = [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="white" stroke="#444"/>']
    for v, label in xa.ticks():
        x = xa.t(v)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>')
    for v, label in ya.ticks():
        y = ya.t(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    for h in p.get("hlines", []):
        y = ya.t(h["y"])
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#888" stroke-dasharray="2,3"/>'
            f'<text x="{right - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#666">{escape(h["label"])}</text>'
        )
    for i, s in enumerate(p["series"]):
        color = s.get("color", COLORS[i % len(COLORS)])
        dash = ' stroke-dasharray="6,4"' if s.get("dashed") else ""
        pts = " ".join(f"{xa.t(x):.1f},{ya.t(y):.1f}" for x, y in zip(s["x"], s["y"]))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y in zip(s["x"], s["y"]):
            if s.get("dashed"):
                out.append(
                    f'<rect x="{xa.t(x) - 3:.1f}" y="{ya.t(y) - 3:.1f}" width="6" height="6" fill="white" '
                    f'stroke="{color}"/>'
                )
            else:
                out.append(f'<circle cx="{xa.t(x):.1f}" cy="{ya.t(y):.1f}" r="3.5" fill="{color}"/>')
    out.append(
        f'<text x="{(left + right) / 2}" y="{oy + 20}" text-anchor="middle" font-weight="bold">'
        f"{escape(p['title'])}</text>"
    )
    out.append(f'<text x="{(left + right) / 2}" y="{bottom + 36}" text-anchor="middle">{escape(p["xlabel"])}</text>')
    cy = (top + bottom) / 2
    out.append(
        f'<text x="{ox + 16}" y="{cy}" text-anchor="middle" transform="rotate(-90 {ox + 16} {cy})">'
        f"{escape(p['ylabel'])}</text>"
    )
    return out


def legend(ox, oy, width, series):
    out, x, y = [], ox + MARGIN["left"], oy
    for i, s in enumerate(series):
        label = s["label"]
        w = 34 + 7 * len(label)
        if x + w > ox + width:
            x, y = ox + MARGIN["left"], y + LEGEND_H
        color = s.get("color", COLORS[i % len(COLORS)])
        dash = ' stroke-dasharray="6,4"' if s.get("dashed") else ""
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 24}" y2="{y - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 28}" y="{y}">{escape(label)}</text>')
        x += w
    return out, y - oy + LEGEND_H


def figure(path, panels, legend_series, note):
    width = PANEL_W * len(panels)
    body = []
    for i, p in enumerate(panels):
        body += panel(i * PANEL_W, 0, p)
    leg, leg_h = legend(0, PANEL_H + 8, width, legend_series)
    body += leg
    height = PANEL_H + 8 + leg_h + 18
    body.append(f'<text x="{MARGIN["left"]}" y="{height - 6}" fill="#555" font-size="11">{escape(note)}</text>')
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        *body,
        "</svg>",
    ]
    Path(path).write_text("\n".join(svg) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = Path(args[0] if args else "docs/plots/scaling.json")
    out = Path(args[1] if len(args) > 1 else "docs/plots")
    out.mkdir(parents=True, exist_ok=True)
    d = json.loads(src.read_text())
    note = f"best of {d['best_of']} runs each; release build, 2 vCPU; floor measured in the same run"

    # 1. Round cost against standing guarantees.
    g = d["cost_vs_guarantees"]
    gx = [r["standing_guarantees"] for r in g]
    cost = [
        {"label": "ledger round (leader + follower)", "x": gx, "y": [r["per_round_us"] / 1e3 for r in g]},
        {"label": "cryptographic floor", "x": gx, "y": [r["floor_per_round_us"] / 1e3 for r in g], "dashed": True},
    ]
    ratio = [{"label": "ratio to floor", "x": gx, "y": [r["ratio"] for r in g], "color": COLORS[2]}]
    figure(
        out / "cost_vs_guarantees.svg",
        [
            {"title": "Time per proposal round", "xlabel": "standing guarantees G", "ylabel": "ms per round",
             "xlog": True, "ylog": True, "series": cost},
            {"title": "Ratio to the floor", "xlabel": "standing guarantees G", "ylabel": "round / floor",
             "xlog": True, "series": ratio, "yinclude": (1.0, 1.5),
             "hlines": [{"y": 1.0, "label": "floor"}, {"y": 1.5, "label": "goal ≤ 1.5"}]},
        ],
        cost + ratio,
        note,
    )

    # 2. Cost per proposal against queue length.
    q = d["cost_vs_queue"]
    qx = [r["queue_length"] for r in q]
    phases = [("propose", "propose (leader)"), ("receive", "verify (follower)"),
              ("acknowledge", "countersign + take it (once per queue)")]
    series = []
    for i, (key, label) in enumerate(phases):
        series.append({"label": label, "x": qx, "y": [r[key]["per_proposal_us"] for r in q], "color": COLORS[i]})
        series.append({"label": f"floor: {key}", "x": qx, "y": [r[key]["floor_per_proposal_us"] for r in q],
                       "color": COLORS[i], "dashed": True})
    total = [
        {"label": "whole round, per proposal", "x": qx, "y": [r["total"]["per_proposal_us"] for r in q],
         "color": COLORS[3]},
        {"label": "floor", "x": qx, "y": [r["total"]["floor_per_proposal_us"] for r in q], "color": COLORS[3],
         "dashed": True},
    ]
    figure(
        out / "cost_vs_queue.svg",
        [
            {"title": "Per proposal, by phase", "xlabel": "queue length Q (proposals before one acknowledgement)",
             "ylabel": "µs per proposal", "xlog": True, "ylog": True, "series": series},
            {"title": "Per proposal, all phases", "xlabel": "queue length Q", "ylabel": "µs per proposal",
             "xlog": True, "series": total, "yinclude": (0,)},
        ],
        series + total,
        note + "; G = 0",
    )

    # 3. Memory against standing guarantees.
    m = d["memory"]
    rows = m["vs_guarantees"]
    mx = [r["standing_guarantees"] for r in rows]
    mem = [
        {"label": "LeaderChannel", "x": mx, "y": [r["leader_bytes"] for r in rows]},
        {"label": "FollowerChannel", "x": mx, "y": [r["follower_bytes"] for r in rows], "dashed": True},
        {"label": "one LedgerOutcome's guarantees (a channel holds 2)", "x": mx[1:],
         "y": [r["outcome_bytes"] for r in rows[1:]]},
        {"label": "guarantee statuses", "x": mx[1:], "y": [r["guarantee_statuses_bytes"] for r in rows[1:]]},
    ]
    per = [
        {"label": "LeaderChannel", "x": mx[1:],
         "y": [(r["leader_bytes"] - rows[0]["leader_bytes"]) / r["standing_guarantees"] for r in rows[1:]],
         "color": COLORS[0]},
    ]
    figure(
        out / "memory_vs_guarantees.svg",
        [
            {"title": "Live heap + inline bytes", "xlabel": "standing guarantees G", "ylabel": "bytes",
             "xlog": True, "ylog": True, "series": mem},
            {"title": "Bytes per guarantee (above G = 0)", "xlabel": "standing guarantees G",
             "ylabel": "bytes per guarantee", "xlog": True, "series": per, "yinclude": (0,)},
        ],
        mem,
        "counted by a global allocator wrapping System (live bytes), not estimated",
    )


def us(v):
    """A time given in µs, in the unit that suits it."""
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    if v >= 10:
        return f"{v:.1f} µs"
    return f"{v:.2f} µs"


def size(b):
    if b >= 1 << 20:
        return f"{b / (1 << 20):.1f} MiB"
    if b >= 1 << 10:
        return f"{b / (1 << 10):.1f} KiB"
    return f"{b:.0f} B"


def tables(d):
    out = ["| G (standing guarantees) | state size | rounds timed | per round | floor per round | ratio |",
           "|---|---|---|---|---|---|"]
    for r in d["cost_vs_guarantees"]:
        out.append(f"| {r['standing_guarantees']:,} | {size(r['state_bytes'])} | {r['rounds']} | "
                   f"{us(r['per_round_us'])} | {us(r['floor_per_round_us'])} | **{r['ratio']:.3f}** |")
    out += ["", "| Q (queue length) | proposals timed | propose | verify | acknowledge | whole round | "
                "queued, leader / follower |", "|---|---|---|---|---|---|---|"]
    for r in d["cost_vs_queue"]:
        cells = [f"{us(r[k]['per_proposal_us'])} / {us(r[k]['floor_per_proposal_us'])} "
                 f"(**{r[k]['ratio']:.2f}**)" for k in ("propose", "receive", "acknowledge", "total")]
        out.append(f"| {r['queue_length']:,} | {r['proposals_timed']:,} | " + " | ".join(cells) +
                   f" | {r['leader_queue_bytes_per_proposal']:.0f} B / {r['follower_queue_bytes_per_proposal']:.0f} B |")
    m = d["memory"]
    c = m["per_channel"]
    out += ["", "| G | LeaderChannel | FollowerChannel | one LedgerOutcome | guarantee statuses |", "|---|---|---|---|---|"]
    for r in m["vs_guarantees"]:
        out.append(f"| {r['standing_guarantees']:,} | {r['leader_bytes']:,} B | {r['follower_bytes']:,} B | "
                   f"{r['outcome_bytes']:,} B | {r['guarantee_statuses_bytes']:,} B |")
    out.append(f"| **per guarantee** (least-squares slope) | **{m['leader_bytes_per_guarantee']:.0f} B** | "
               f"**{m['follower_bytes_per_guarantee']:.0f} B** | {m['outcome_bytes_per_guarantee']:.0f} B | "
               f"{m['guarantee_statuses_bytes_per_guarantee']:.0f} B |")
    out.append(f"| **per channel** (G = 0) | **{c['leader_total_bytes']:.0f} B** ({c['leader_inline_bytes']} inline + "
               f"{c['leader_heap_bytes']:.0f} heap) | **{c['follower_total_bytes']:.0f} B** "
               f"({c['follower_inline_bytes']} + {c['follower_heap_bytes']:.0f}) | | |")
    h = d["hub"]
    out += ["", "| | value |", "|---|---|",
            f"| ledgers held (one `LeaderChannel` each, in a `HashMap` by channel id) | {h['ledgers']:,} |",
            f"| memory, live bytes | {size(h['memory_bytes'])} ({h['memory_bytes_per_ledger']:.0f} B per ledger) |",
            f"| build the channels from signed funding states | {h['build_ms']:.1f} ms "
            f"({h['build_us_per_ledger']:.2f} µs per ledger) |",
            f"| (sign the funding states, 2 signatures each, not part of the hub) | {h['fund_states_signed_ms']:.0f} ms |",
            f"| one round on one ledger, the others held ({h['rounds']} rounds) | {us(h['hub_per_round_us'])}, floor "
            f"{us(h['floor_per_round_us'])}, ratio **{h['hub_ratio']:.3f}** |",
            f"| the same rounds on that ledger held alone | {us(h['lone_per_round_us'])}, floor "
            f"{us(h['floor_per_round_us'])}, ratio **{h['lone_ratio']:.3f}** |"]
    return "\n".join(out)


if __name__ == "__main__":
    main()
    if "--tables" in sys.argv:
        files = [a for a in sys.argv[1:] if not a.startswith("--")]
        print(tables(json.loads(Path(files[0] if files else "docs/plots/scaling.json").read_text())))
