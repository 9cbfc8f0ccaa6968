"""The HTML page of ``report --html``: one self-contained file, viewable offline.

Everything is inline: CSS in a ``<style>`` element, charts as inline SVG drawn here (no
JavaScript at all, tooltips are SVG ``<title>`` elements), system fonts. A Content-Security-Policy
meta tag (``default-src 'none'``) makes the browser refuse any request the page might make, so
opening it never contacts a server.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone

from otel_online_eval.tools._stats import ScorerStats, StatsTable
from otel_online_eval.tools._text import fmt_num, fmt_pct, fmt_time

__all__ = ["CSP", "render_html"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #1d2330;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
.sub { color: #5b6475; margin: 0 0 20px; }
table.summary { border-collapse: collapse; width: 100%; background: #fff;
                border: 1px solid #dfe3ea; border-radius: 8px; overflow: hidden; }
table.summary th, table.summary td { padding: 6px 10px; border-bottom: 1px solid #eceff4;
                                     text-align: right; white-space: nowrap; }
table.summary th { background: #eef1f6; font-weight: 600; color: #3a4254; }
table.summary td.l, table.summary th.l { text-align: left; }
table.summary td.labels { white-space: normal; text-align: left; color: #3a4254; }
section.card { background: #fff; border: 1px solid #dfe3ea; border-radius: 8px;
               margin: 22px 0 0; padding: 16px 18px; }
section.card h2 { font-size: 17px; margin: 0 0 8px; }
section.card h2 .rule { color: #5b6475; font-weight: 500; }
.chips { display: flex; flex-wrap: wrap; gap: 8px; margin: 0 0 12px; }
.chip { background: #eef1f6; border-radius: 14px; padding: 2px 10px; color: #2a3142; }
.chip b { font-weight: 600; }
.chip.bad { background: #fde8e8; color: #8a1c1c; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; }
figcaption { font-size: 12px; color: #5b6475; margin: 0 0 4px; font-weight: 600;
             text-transform: uppercase; letter-spacing: .04em; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6475; }
svg .axis { stroke: #9aa3b2; stroke-width: 1; }
svg .grid { stroke: #eceff4; stroke-width: 1; }
svg .bar { fill: #4f7cff; }
svg .bar:hover { fill: #2f5be0; }
svg .pt { fill: #4f7cff; fill-opacity: .35; }
svg .mean { fill: none; stroke: #f28c28; stroke-width: 2.2; }
svg .empty { font-size: 13px; fill: #9aa3b2; }
.labels { margin-top: 12px; max-width: 500px; }
.lrow { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.lname { width: 140px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ltrack { flex: 1; background: #eef1f6; border-radius: 3px; height: 12px; }
.lbar { background: #7c9cff; height: 12px; border-radius: 3px; }
.lcount { width: 96px; text-align: right; color: #5b6475; }
footer { margin-top: 28px; color: #8a93a5; font-size: 12px; }
"""

_W, _H = 500, 230
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 44, 14, 12, 40


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if lo == hi:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _svg_open(label: str) -> str:
    return (
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{_e(label)}">'
    )


def _grid(y: float) -> str:
    return f'<line class="grid" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'


def _text(x: float, y: float, text: str, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{_e(text)}</text>'


def _empty(label: str, text: str) -> str:
    return (
        _svg_open(label)
        + f'<text class="empty" x="{_W / 2}" y="{_H / 2}" text-anchor="middle">{_e(text)}</text>'
        + "</svg>"
    )


def histogram_svg(values: Sequence[float], bins: int = 10) -> str:
    """A histogram of scores as inline SVG."""
    label = "score histogram"
    if not values:
        return _empty(label, "no numeric scores")
    lo, hi = _range(values)
    step = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        i = int((v - lo) / step) if step > 0 else 0
        counts[min(max(i, 0), bins - 1)] += 1
    top = max(counts)
    pw, ph = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    bw = pw / bins
    parts = [_svg_open(label)]
    for frac in (0.0, 0.5, 1.0):
        y = _PAD_T + ph - frac * ph
        parts.append(
            f'<line class="grid" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(_text(_PAD_L - 6, y + 4, _count(top * frac), "end"))
    total = len(values)
    for i, c in enumerate(counts):
        h = c / top * ph if top else 0
        x = _PAD_L + i * bw
        a, b = lo + i * step, lo + (i + 1) * step
        tip = f"{fmt_num(a)} to {fmt_num(b)}: {c} ({c / total * 100:.0f}%)"
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{_PAD_T + ph - h:.1f}" width="{bw - 2:.1f}" '
            f'height="{max(h, 0):.1f}"><title>{_e(tip)}</title></rect>'
        )
    base = _PAD_T + ph
    parts.append(f'<line class="axis" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{base}" y2="{base}"/>')
    for i in range(0, bins + 1, 2):
        x = _PAD_L + i * bw
        parts.append(_text(x, base + 15, fmt_num(lo + i * step, 2)))
    parts.append(_text(_PAD_L + pw / 2, _H - 6, f"score ({total} values)"))
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(times: Sequence[int], values: Sequence[float], max_points: int = 1500) -> str:
    """Scores over time (points) with the mean per time bucket (a line), as inline SVG."""
    label = "score over time"
    pairs = sorted((t, v) for t, v in zip(times, values, strict=False) if t > 0)
    if not pairs:
        return _empty(label, "no timed numeric scores")
    lo, hi = _range([v for _, v in pairs])
    t0, t1 = pairs[0][0], pairs[-1][0]
    if t1 == t0:
        t0, t1 = t0 - 500_000_000, t1 + 500_000_000
    pw, ph = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def x_of(t: int) -> float:
        return _PAD_L + (t - t0) / (t1 - t0) * pw

    def y_of(v: float) -> float:
        return _PAD_T + ph - (v - lo) / (hi - lo) * ph

    parts = [_svg_open(label)]
    for frac in (0.0, 0.5, 1.0):
        y = _PAD_T + ph - frac * ph
        parts.append(
            f'<line class="grid" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(_text(_PAD_L - 6, y + 4, fmt_num(lo + frac * (hi - lo), 2), "end"))
    stride = max(1, math.ceil(len(pairs) / max_points))
    for t, v in pairs[::stride]:
        parts.append(f'<circle class="pt" cx="{x_of(t):.1f}" cy="{y_of(v):.1f}" r="2.4"/>')
    buckets = max(1, min(40, len(pairs) // 5))
    sums = [0.0] * buckets
    ns = [0] * buckets
    for t, v in pairs:
        i = min(int((t - t0) / (t1 - t0) * buckets), buckets - 1)
        sums[i] += v
        ns[i] += 1
    points = []
    for i in range(buckets):
        if ns[i]:
            mid = t0 + (i + 0.5) / buckets * (t1 - t0)
            points.append(f"{x_of(int(mid)):.1f},{y_of(sums[i] / ns[i]):.1f}")
    if len(points) > 1:
        parts.append(
            f'<polyline class="mean" points="{" ".join(points)}"><title>mean per '
            f"time bucket</title></polyline>"
        )
    elif points:
        cx, cy = points[0].split(",")
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="#f28c28"/>')
    base = _PAD_T + ph
    parts.append(f'<line class="axis" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{base}" y2="{base}"/>')
    same_day = _day(t0) == _day(t1)
    for i in range(5):
        t = int(t0 + i / 4 * (t1 - t0))
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        parts.append(
            f'<text x="{x_of(t):.1f}" y="{base + 15}" text-anchor="{anchor}">'
            f"{_e(_tick(t, t1 - t0, same_day))}</text>"
        )
    caption = f"time (UTC) {_day(t0)}" + ("" if same_day else f" to {_day(t1)}")
    caption += " · line: mean per bucket"
    parts.append(
        f'<text x="{_PAD_L + pw / 2}" y="{_H - 6}" text-anchor="middle">{_e(caption)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d")


def _tick(ns: int, span_ns: int, same_day: bool) -> str:
    """A time axis label, as precise as the axis' span needs."""
    dt = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    if not same_day:
        return dt.strftime("%m-%d %H:%M")
    if span_ns < 120 * 10**9:
        return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"
    if span_ns < 6 * 3600 * 10**9:
        return dt.strftime("%H:%M:%S")
    return dt.strftime("%H:%M")


def _count(x: float) -> str:
    return str(round(x))


def _tokens(s: ScorerStats) -> str:
    if not (s.input_tokens or s.output_tokens):
        return "-"
    return f"{s.input_tokens:,} / {s.output_tokens:,}"


def _labels_html(labels: Counter[str], top: int = 12) -> str:
    if not labels:
        return ""
    most = labels.most_common(top)
    peak = most[0][1]
    total = sum(labels.values())
    rows = []
    for name, n in most:
        width = n / peak * 100
        rows.append(
            f'<div class="lrow"><span class="lname" title="{_e(name)}">{_e(name)}</span>'
            f'<span class="ltrack"><span class="lbar" style="display:block;width:{width:.1f}%">'
            f'</span></span><span class="lcount">{n} ({n / total * 100:.0f}%)</span></div>'
        )
    more = f"<div class='sub'>+{len(labels) - top} more labels</div>" if len(labels) > top else ""
    return f'<div class="labels"><figcaption>labels</figcaption>{"".join(rows)}{more}</div>'


def _card(s: ScorerStats) -> str:
    chips = [
        f"<span class='chip'>count <b>{s.count}</b></span>",
        f"<span class='chip'>mean <b>{_e(fmt_num(s.mean))}</b></span>",
        f"<span class='chip'>p10 / p50 / p90 <b>{_e(fmt_num(s.pct(10)))} / "
        f"{_e(fmt_num(s.pct(50)))} / {_e(fmt_num(s.pct(90)))}</b></span>",
        f"<span class='chip'>pass rate <b>{_e(fmt_pct(s.pass_rate))}</b></span>",
    ]
    bad = " bad" if s.errors else ""
    chips.append(
        f"<span class='chip{bad}'>errors <b>{s.errors}</b> ({_e(fmt_pct(s.error_rate))})</span>"
    )
    if s.skipped:
        chips.append(f"<span class='chip'>skipped <b>{s.skipped}</b></span>")
    if s.input_tokens or s.output_tokens:
        models = f" · {', '.join(sorted(s.models))}" if s.models else ""
        chips.append(
            f"<span class='chip'>judge tokens <b>{s.input_tokens:,} in / "
            f"{s.output_tokens:,} out</b>{_e(models)}</span>"
        )
    return (
        "<section class='card'>"
        f"<h2><span class='rule'>{_e(s.rule)} &rsaquo;</span> {_e(s.scorer)}</h2>"
        f"<div class='chips'>{''.join(chips)}</div>"
        "<div class='charts'>"
        f"<figure><figcaption>score distribution</figcaption>{histogram_svg(s.values)}</figure>"
        f"<figure><figcaption>score over time</figcaption>{timeline_svg(s.times, s.values)}"
        "</figure></div>"
        f"{_labels_html(s.labels)}</section>"
    )


def render_html(
    stats: StatsTable,
    evals: Counter[str],
    *,
    title: str,
    sources: Sequence[str],
    generated_ns: int,
) -> str:
    """The whole page."""
    rows = []
    for s in stats.sorted():
        top = ", ".join(f"{k} {n}" for k, n in s.labels.most_common(4))
        rows.append(
            "<tr>"
            f"<td class='l'>{_e(s.rule)}</td><td class='l'>{_e(s.scorer)}</td>"
            f"<td>{s.count}</td><td>{_e(fmt_num(s.mean))}</td><td>{_e(fmt_num(s.pct(10)))}</td>"
            f"<td>{_e(fmt_num(s.pct(50)))}</td><td>{_e(fmt_num(s.pct(90)))}</td>"
            f"<td>{_e(fmt_pct(s.pass_rate))}</td><td>{s.errors}</td>"
            f"<td>{_e(fmt_pct(s.error_rate))}</td>"
            f"<td>{_tokens(s)}</td>"
            f"<td class='labels'>{_e(top) or '-'}</td>"
            "</tr>"
        )
    total = sum(evals.values())
    sub = (
        f"{total} evaluation(s), {len(stats)} rule/scorer pair(s) · from "
        f"{_e(', '.join(sources))} · generated {_e(fmt_time(generated_ns))}"
    )
    cards = "".join(_card(s) for s in stats.sorted())
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # No favicon request either.
        "<link rel='icon' href='data:,'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class='sub'>{sub}</p>"
        "<table class='summary'><thead><tr>"
        "<th class='l'>rule</th><th class='l'>scorer</th><th>count</th><th>mean</th>"
        "<th>p10</th><th>p50</th><th>p90</th><th>pass</th><th>errors</th><th>err %</th>"
        "<th>judge tokens in / out</th><th class='l'>labels</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"{cards}"
        "<footer>pass: share of scores &ge; 0.5 · err %: errors / (scores + errors) · "
        "percentiles interpolate linearly · generated by otel-online-eval report</footer>"
        "</main></body></html>\n"
    )
