"""Small inline SVG charts for the HTML report: vector, a few KB each, no JavaScript.

A PNG of a line chart weighs 50-150 KB as base64; the same chart as SVG polylines is a
few KB and stays sharp at any zoom. Every function here returns an ``<svg>`` string (or
``""`` when there is nothing to draw) built from :class:`~.run_data.RunData` series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from ..keys import CATEGORIES, NOISE_KEY, category_key
from .run_data import RunData

__all__ = ["CHARTS", "histogram_chart", "line_chart"]

COLORS = {"removed": "#d62728", "preserved": "#1f77b4", "emerged": "#2ca02c"}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
W, H = 520, 230
_L, _R, _T, _B = 52, 12, 12, 34  # margins


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _num(x: float) -> str:
    return f"{x:.3g}"


def line_chart(
    series: Sequence[tuple[str, str, Sequence[float], Sequence[float]]],
    *,
    ylabel: str,
    markers: Sequence[tuple[float, str, str]] = (),
    log_y: bool = False,
) -> str:
    """``series``: ``(label, colour, xs, ys)``; ``markers``: vertical ``(x, label, colour)``.

    Non-finite points break a line. Returns ``""`` when no series has a finite point.
    """
    pts = [
        (x, y)
        for _, _, xs, ys in series
        for x, y in zip(xs, ys, strict=False)
        if math.isfinite(x) and math.isfinite(y) and (not log_y or y > 0)
    ]
    if not pts:
        return ""
    f = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    for x, _, _ in markers:
        x0, x1 = min(x0, x), max(x1, x)
    y0, y1 = min(f(p[1]) for p in pts), max(f(p[1]) for p in pts)
    if not log_y:
        y0 = min(y0, 0.0)
    if y1 <= y0:
        y1 = y0 + (abs(y0) or 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    pw, ph = W - _L - _R, H - _T - _B

    def sx(x: float) -> float:
        return _L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return _T + ph - (f(y) - y0) / (y1 - y0) * ph

    out = [
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(ylabel)}">',
        f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccd"/>',
    ]
    for t in _nice_ticks(y0, y1):
        y = _T + ph - (t - y0) / (y1 - y0) * ph
        label = _num(10**t) if log_y else _num(t)
        out.append(
            f'<line x1="{_L}" x2="{_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef"/>'
            f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    for t in _nice_ticks(x0, x1, 5):
        x = sx(t)
        out.append(f'<text x="{x:.1f}" y="{H - _B + 14}" text-anchor="middle">{_num(t)}</text>')
    out.append(f'<text x="{_L + pw / 2}" y="{H - 4}" text-anchor="middle">training step</text>')
    out.append(
        f'<text transform="translate(12,{_T + ph / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(ylabel)}</text>"
    )
    for x, label, colour in markers:
        out.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{_T}" y2="{_T + ph}" stroke="{colour}" '
            f'stroke-dasharray="4 3"><title>{escape(label)}</title></line>'
        )
    legend = []
    for k, (label, colour, xs, ys) in enumerate(series):
        runs: list[list[str]] = [[]]
        for x, y in zip(xs, ys, strict=False):
            if math.isfinite(x) and math.isfinite(y) and (not log_y or y > 0):
                runs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
            elif runs[-1]:
                runs.append([])
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            elif run:
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" '
                    f'points="{" ".join(run)}"><title>{escape(label)}</title></polyline>'
                )
        legend.append(
            f'<rect x="{_L + 8}" y="{_T + 6 + 14 * k}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{_L + 22}" y="{_T + 11 + 14 * k}">{escape(label)}</text>'
        )
    for k, (_, label, colour) in enumerate(markers):
        y = _T + 6 + 14 * (len(series) + k)
        legend.append(
            f'<line x1="{_L + 8}" x2="{_L + 18}" y1="{y + 2}" y2="{y + 2}" stroke="{colour}" '
            f'stroke-dasharray="3 2"/><text x="{_L + 22}" y="{y + 5}">{escape(label)}</text>'
        )
    out += legend
    out.append("</svg>")
    return "".join(out)


def histogram_chart(groups: dict[str, Sequence[float]], *, ylabel: str) -> str:
    """Grouped bars: ``{category: [value per order 0..n]}`` (order 0 left out)."""
    n = max((len(v) for v in groups.values()), default=0)
    values = [x for v in groups.values() for x in v[1:] if math.isfinite(x)]
    if n < 2 or not values:
        return ""
    top = max(values) or 1.0
    pw, ph = W - _L - _R, H - _T - _B
    slot = pw / (n - 1)
    bar = slot / (len(groups) + 1)
    out = [
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(ylabel)}">',
        f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccd"/>',
    ]
    for t in _nice_ticks(0.0, top):
        y = _T + ph - t / top * ph
        out.append(
            f'<line x1="{_L}" x2="{_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef"/>'
            f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>'
        )
    for k, (cat, vals) in enumerate(groups.items()):
        colour = COLORS.get(cat, _PALETTE[k % len(_PALETTE)])
        for order in range(1, len(vals)):
            v = vals[order]
            if not math.isfinite(v) or v <= 0:
                continue
            h = v / top * ph
            x = _L + (order - 1) * slot + bar * (k + 0.5)
            out.append(
                f'<rect x="{x:.1f}" y="{_T + ph - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(cat)}, order {order}: {_num(v)}</title></rect>'
            )
        out.append(
            f'<rect x="{_L + pw - 110}" y="{_T + 6 + 14 * k}" width="10" height="8" '
            f'fill="{colour}"/><text x="{_L + pw - 96}" y="{_T + 14 + 14 * k}">'
            f"{escape(cat)}</text>"
        )
    for order in range(1, n):
        x = _L + (order - 1) * slot + slot / 2
        out.append(f'<text x="{x:.1f}" y="{H - _B + 14}" text-anchor="middle">{order}</text>')
    out.append(f'<text x="{_L + pw / 2}" y="{H - 4}" text-anchor="middle">order |S|</text>')
    out.append(
        f'<text transform="translate(12,{_T + ph / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(ylabel)}</text></svg>"
    )
    return "".join(out)


def _markers(run: RunData) -> list[tuple[float, str, str]]:
    out = []
    if run.stage_end_step is not None:
        out.append((float(run.stage_end_step), f"stage end ({run.stage_end_step})", "#888"))
    if run.stop_step is not None:
        out.append((float(run.stop_step), f"stop ({run.stop_step})", "#000"))
    return out


def _categories(run: RunData, metric: str) -> list[tuple[str, str, list, list]]:
    out = []
    for c in CATEGORIES:
        key = category_key(c, metric)
        if run.has(key):
            xs, ys = run.series(key)
            out.append((c, COLORS[c], [float(x) for x in xs], ys))
    return out


def counts_chart(run: RunData) -> str:
    return line_chart(
        _categories(run, "count"), ylabel="salient interactions per probe", markers=_markers(run)
    )


def strengths_chart(run: RunData) -> str:
    return line_chart(
        _categories(run, "strength_norm"), ylabel="share of total strength", markers=_markers(run)
    )


def quality_chart(run: RunData) -> str:
    series = [(f"ρ {c}", col, xs, ys) for c, col, xs, ys in _categories(run, "rho")]
    for c, col, xs, ys in _categories(run, "gamma"):
        series.append((f"γ {c}", col, xs, ys))
    return line_chart(series, ylabel="ρ (and γ)", markers=_markers(run))


def noise_chart(run: RunData) -> str:
    if not run.has(NOISE_KEY):
        return ""
    xs, ys = run.series(NOISE_KEY)
    return line_chart(
        [("noise", "#9467bd", [float(x) for x in xs], ys)],
        ylabel="new-interaction noise",
        markers=_markers(run),
    )


def loss_chart(run: RunData) -> str:
    losses = run.losses()
    series = [
        (name, _PALETTE[k % len(_PALETTE)], [float(x) for x in xs], ys)
        for k, (name, (xs, ys)) in enumerate(sorted(losses.items()))
    ]
    return line_chart(series, ylabel="loss", markers=_markers(run))


def orders_chart(run: RunData) -> str:
    hists = run.order_histograms()
    if not hists:
        return ""
    return histogram_chart(
        {c: h["count"] for c, h in hists.items()},
        ylabel=f"interactions per probe (step {run.focus_step})",
    )


#: ``(anchor, caption, draw)`` in page order; each chart appears once.
CHARTS = (
    ("counts", "Removed, preserved and newly emerged interactions", counts_chart),
    ("strengths", "Normalised strength per category", strengths_chart),
    ("quality", "Quality: ρ (solid) and γ per category", quality_chart),
    ("noise", "Noise signal and early stop", noise_chart),
    ("orders", "Interactions per order at the stop (or last) step", orders_chart),
    ("loss", "Training and evaluation loss", loss_chart),
)
