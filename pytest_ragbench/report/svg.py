"""Small inline SVG charts for the HTML report, drawn without any charting library.

Every function returns :class:`markupsafe.Markup` holding one well-formed ``<svg>`` element
(parseable as XML), so a Jinja template with autoescaping can embed it as is. All text that
comes from data (retriever and metric names, values) is escaped here. Charts carry a ``<title>``
per mark, so hovering a bar shows its exact figures without any script.

Nothing here imports pytest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from .format import coord, num

__all__ = [
    "PALETTE",
    "CiSeries",
    "DeltaBar",
    "HistSeries",
    "ci_bar_chart",
    "color",
    "delta_chart",
    "histogram_panel",
    "sparkline",
]

# Okabe-Ito: distinguishable for the common forms of colour blindness.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")
_AXIS = "#888"
_GRID = "#ddd"
_TEXT = "currentColor"
_BAD = "#C0392B"
_GOOD = "#1E8449"
_NEUTRAL = "#7F8C8D"
_MAX_LABEL = 22


def color(index: int) -> str:
    """The palette colour of the ``index``-th series (cycling)."""
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class CiSeries:
    """One retriever in a bar chart: per metric ``(mean, ci_low, ci_high)``, None when NaN."""

    name: str
    color: str
    points: tuple[tuple[float | None, float | None, float | None], ...]


@dataclass(frozen=True)
class HistSeries:
    """One retriever's per-query values of a metric (None = not computable)."""

    name: str
    color: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class DeltaBar:
    """A change against the baseline; ``allowed`` is the tolerated move in the worse direction;
    ``checked``: whether a tolerance or gate judged it (else it is shown, not judged)."""

    label: str
    delta: float | None
    allowed: float | None
    direction: str
    regressed: bool
    ci_low: float | None = None
    ci_high: float | None = None
    checked: bool = True


# -- helpers --------------------------------------------------------------------------------


def _attrs(attrs: dict[str, object]) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        text = coord(value) if isinstance(value, float) else str(value)
        parts.append(f' {key}="{escape(text)}"')
    return "".join(parts)


def _el(tag: str, attrs: dict[str, object], *children: str) -> str:
    if not children:
        return f"<{tag}{_attrs(attrs)}/>"
    return f"<{tag}{_attrs(attrs)}>{''.join(children)}</{tag}>"


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _text(x: float, y: float, text: str, **attrs: object) -> str:
    base: dict[str, object] = {"x": x, "y": y, "fill": _TEXT}
    base.update({k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()})
    return f"<text{_attrs(base)}>{escape(text)}</text>"


def _short(text: str, limit: int = _MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _svg(width: float, height: float, label: str, body: str, cls: str) -> Markup:
    attrs = {"class": cls, "width": width, "height": height,
             "viewBox": f"0 0 {coord(width)} {coord(height)}", "role": "img",
             "aria-label": label}
    return Markup(_el("svg", attrs, _title(label), body))


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _domain(values: Sequence[float]) -> tuple[float, float]:
    """[0, 1] for the usual scores; otherwise widened to include the data and 0."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(min(values), 0.0), max(max(values), 1.0 if max(values) <= 1.0 else 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    return lo, hi


# -- charts ---------------------------------------------------------------------------------


def _fitted_domain(values: Sequence[float]) -> tuple[float, float]:
    """From 0 (or the lowest value, when negative) to a round number above the highest."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(min(values), 0.0), max(max(values), 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    ticks = _nice_ticks(lo, hi)
    if len(ticks) > 1 and ticks[-1] < hi:
        # Up to the next tick, so the highest bar or whisker stays inside the axis.
        ticks.append(round(ticks[-1] + (ticks[-1] - ticks[-2]), 12))
    return lo, max(ticks[-1], hi)


def ci_bar_chart(metrics: Sequence[str], series: Sequence[CiSeries], *, label: str,
                 unit: str | None = None) -> Markup:
    """Grouped bars: one group per metric, one bar per retriever, with 95% CI whiskers.

    Without ``unit`` the axis is the [0, 1] of scores (widened only for values outside it).
    With a ``unit`` (``"ms"``, ``"$"``, or ``""`` for a count) the axis fits the values and
    is labelled with the unit: a latency in milliseconds shares no axis with scores.
    """
    n_series = max(len(series), 1)
    bar_w = 18.0 if n_series <= 4 else 12.0
    # Wide enough for the bars and for the metric name under them (about 6.5 px a character).
    label_w = max([6.5 * len(_short(m)) + 10.0 for m in metrics] + [0.0])
    group_w = max(n_series * bar_w + 18.0, label_w)
    left = 44.0 if unit is None else 60.0
    right, top, bottom = 12.0, 16.0 + 16.0 * math.ceil(n_series / 4), 40.0
    plot_h = 160.0
    min_w = 360.0 if unit is None else 200.0
    width = max(left + right + group_w * max(len(metrics), 1), min_w)
    height = top + plot_h + bottom
    # Groups centred when the chart is wider than they need (a one-metric chart).
    spare = width - left - right - group_w * max(len(metrics), 1)
    values = _finite([v for s in series for p in s.points for v in p])
    lo, hi = _domain(values) if unit is None else _fitted_domain(values)

    def y(v: float) -> float:
        return top + plot_h * (1.0 - (v - lo) / (hi - lo))

    parts: list[str] = []
    for t in _nice_ticks(lo, hi):
        parts.append(_el("line", {"x1": left, "x2": width - right, "y1": y(t), "y2": y(t),
                                  "stroke": _GRID}))
        parts.append(_text(left - 4, y(t) + 4, f"{t:g}", text_anchor="end", font_size=10))
    parts.append(_el("line", {"x1": left, "x2": left, "y1": top, "y2": top + plot_h,
                              "stroke": _AXIS}))
    if unit:
        parts.append(_text(4.0, top - 4, unit, font_size=10, class_="unit"))
    base = y(min(max(0.0, lo), hi))
    for mi, metric in enumerate(metrics):
        gx = left + spare / 2 + mi * group_w + (group_w - n_series * bar_w) / 2
        for si, s in enumerate(series):
            mean, ci_lo, ci_hi = s.points[mi] if mi < len(s.points) else (None, None, None)
            x = gx + si * bar_w
            tip = f"{s.name} {metric}: {num(mean)}{f' {unit}' if unit else ''}"
            if ci_lo is not None or ci_hi is not None:
                tip += f" [{num(ci_lo)}, {num(ci_hi)}]"
            if mean is None or not math.isfinite(mean):
                parts.append(_el("g", {}, _title(tip),
                                 _text(x + bar_w / 2, base - 3, "\u00d7", text_anchor="middle",
                                       font_size=11, fill=s.color)))
                continue
            top_y, bot_y = sorted((y(mean), base))
            bar = [_title(tip), _el("rect", {"x": x + 1, "y": top_y, "width": bar_w - 2,
                                             "height": max(bot_y - top_y, 0.5),
                                             "fill": s.color, "fill-opacity": "0.85"})]
            if ci_lo is not None and ci_hi is not None and math.isfinite(ci_lo) \
                    and math.isfinite(ci_hi):
                cx = x + bar_w / 2
                whisker = {"stroke": _TEXT, "stroke-width": "1.2"}
                bar.append(_el("line", {"x1": cx, "x2": cx, "y1": y(ci_lo), "y2": y(ci_hi),
                                        **whisker}))
                for v in (ci_lo, ci_hi):
                    bar.append(_el("line", {"x1": cx - 4, "x2": cx + 4, "y1": y(v), "y2": y(v),
                                            **whisker}))
            parts.append(_el("g", {"class": "bar"}, *bar))
        parts.append(_text(gx + n_series * bar_w / 2, top + plot_h + 14, _short(metric),
                           text_anchor="middle", font_size=11))
    parts.append(_el("line", {"x1": left, "x2": width - right, "y1": base, "y2": base,
                              "stroke": _AXIS}))
    parts.append(_legend(series, left, 12.0, width - right))
    return _svg(width, height, label, "".join(parts), "chart bars")


def _legend(series: Sequence[CiSeries | HistSeries], x0: float, y0: float,
            x_max: float) -> str:
    parts: list[str] = []
    x, y = x0, y0
    for s in series:
        name = _short(s.name)
        w = 18.0 + 6.5 * len(name)
        if x + w > x_max and x > x0:
            x, y = x0, y + 16.0
        parts.append(_el("g", {}, _title(s.name),
                         _el("rect", {"x": x, "y": y - 9, "width": 10, "height": 10,
                                      "fill": s.color}),
                         _text(x + 14, y, name, font_size=11)))
        x += w + 10.0
    return "".join(parts)


def histogram_panel(metric: str, series: Sequence[HistSeries], *, bins: int = 20) -> Markup:
    """Per-query score distribution of one metric: a small histogram per retriever.

    Heights are shares of that retriever's computable values on one scale for all rows, so
    retrievers compare directly; a vertical tick marks each mean; NaN counts are written out.
    """
    values = _finite([v for s in series for v in s.values])
    lo, hi = _domain(values)
    left, right, row_h, gap, top = 110.0, 70.0, 34.0, 8.0, 8.0
    plot_w = 220.0
    width = left + plot_w + right
    height = top + len(series) * (row_h + gap) + 22.0
    bin_w = plot_w / bins

    def x(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    counts: list[list[int]] = []
    for s in series:
        c = [0] * bins
        for v in _finite(s.values):
            c[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
        counts.append(c)
    shares = [[n / max(sum(c), 1) for n in c] for c in counts]
    peak = max([max(sh) for sh in shares if sh] + [1e-9])

    parts: list[str] = []
    for si, (s, sh) in enumerate(zip(series, shares, strict=True)):
        base = top + si * (row_h + gap) + row_h
        finite = _finite(s.values)
        n_nan = len(s.values) - len(finite)
        parts.append(_el("g", {}, _title(s.name),
                         _text(left - 6, base - row_h / 2 + 4, _short(s.name, 16),
                               text_anchor="end", font_size=11)))
        parts.append(_el("line", {"x1": left, "x2": left + plot_w, "y1": base, "y2": base,
                                  "stroke": _AXIS}))
        for bi, share in enumerate(sh):
            if not share:
                continue
            h = row_h * share / peak
            b_lo = lo + (hi - lo) * bi / bins
            b_hi = lo + (hi - lo) * (bi + 1) / bins
            tip = (f"{s.name} {metric} in [{b_lo:.3g}, {b_hi:.3g}"
                   f"{']' if bi == bins - 1 else ')'}: {counts[si][bi]} queries")
            parts.append(_el("rect", {"x": left + bi * bin_w + 0.5, "y": base - h,
                                      "width": bin_w - 1, "height": max(h, 0.5),
                                      "fill": s.color, "fill-opacity": "0.8"}, _title(tip)))
        if finite:
            mean = sum(finite) / len(finite)
            parts.append(_el("line", {"x1": x(mean), "x2": x(mean), "y1": base - row_h - 2,
                                      "y2": base + 3, "stroke": _TEXT, "stroke-width": "1.5"},
                             _title(f"{s.name} mean {metric}: {num(mean)}")))
        note = f"n={len(finite)}" + (f" nan={n_nan}" if n_nan else "")
        parts.append(_text(left + plot_w + 6, base - row_h / 2 + 4, note, font_size=10))
    axis_y = top + len(series) * (row_h + gap) + 4
    for t in _nice_ticks(lo, hi):
        parts.append(_text(x(t), axis_y + 10, f"{t:g}", text_anchor="middle", font_size=10))
    return _svg(width, height, f"distribution of per-query {metric}", "".join(parts),
                "chart hist")


def delta_chart(rows: Sequence[DeltaBar], *, label: str) -> Markup:
    """Change of each mean against the baseline, as bars around zero.

    A shaded band on the worse side of zero shows the tolerated move; a whisker shows the 95%
    confidence interval of the change when known; bars are red when the row regressed, green
    when the metric moved in its better direction, grey otherwise.
    """
    left, right, row_h, top = 170.0, 70.0, 20.0, 8.0
    plot_w = 260.0
    width = left + plot_w + right
    height = top + max(len(rows), 1) * row_h + 20.0
    extent = max(_finite([abs(v) for r in rows for v in (r.delta, r.ci_low, r.ci_high)
                          if v is not None])
                 + _finite([r.allowed for r in rows]) + [1e-3])
    extent *= 1.15
    mid = left + plot_w / 2

    def x(v: float) -> float:
        return mid + (plot_w / 2) * max(-1.0, min(1.0, v / extent))

    parts: list[str] = []
    for i, r in enumerate(rows):
        y = top + i * row_h
        worse_sign = -1.0 if r.direction == "higher" else 1.0
        parts.append(_el("g", {}, _title(r.label),
                         _text(left - 6, y + row_h / 2 + 4, _short(r.label, 26),
                               text_anchor="end", font_size=11)))
        if r.allowed is not None and math.isfinite(r.allowed) and r.allowed > 0:
            a, b = sorted((x(0.0), x(worse_sign * r.allowed)))
            parts.append(_el("rect", {"x": a, "y": y + 2, "width": b - a, "height": row_h - 4,
                                      "fill": _NEUTRAL, "fill-opacity": "0.18"},
                             _title(f"tolerated {'drop' if worse_sign < 0 else 'rise'}: "
                                    f"{num(r.allowed)}")))
        if r.delta is None or not math.isfinite(r.delta):
            parts.append(_text(mid + 4, y + row_h / 2 + 4, "n/a", font_size=10))
            continue
        better = r.delta * worse_sign < 0
        fill = _BAD if r.regressed else (_GOOD if better and r.delta != 0 else _NEUTRAL)
        a, b = sorted((x(0.0), x(r.delta)))
        verdict = "regressed" if r.regressed else "ok" if r.checked else "unchecked"
        ci = ""
        if r.ci_low is not None and r.ci_high is not None and math.isfinite(r.ci_low) \
                and math.isfinite(r.ci_high):
            ci = f" [{num(r.ci_low, signed=True)}, {num(r.ci_high, signed=True)}]"
        parts.append(_el("rect", {"x": a, "y": y + 5, "width": max(b - a, 1.0),
                                  "height": row_h - 10, "fill": fill},
                         _title(f"{r.label}: {num(r.delta, signed=True)}{ci} ({verdict})")))
        if ci:
            cy = y + row_h / 2
            assert r.ci_low is not None and r.ci_high is not None
            parts.append(_el("line", {"x1": x(r.ci_low), "x2": x(r.ci_high), "y1": cy,
                                      "y2": cy, "stroke": _TEXT, "stroke-width": "1.2"}))
        parts.append(_text(left + plot_w + 6, y + row_h / 2 + 4, num(r.delta, signed=True),
                           font_size=10, fill=fill))
    bottom = top + len(rows) * row_h
    parts.append(_el("line", {"x1": mid, "x2": mid, "y1": top, "y2": bottom, "stroke": _AXIS}))
    for v in (-extent / 1.15, 0.0, extent / 1.15):
        parts.append(_text(x(v), bottom + 14, f"{v:+.3g}" if v else "0",
                           text_anchor="middle", font_size=10))
    return _svg(width, height, label, "".join(parts), "chart delta")


def sparkline(points: Sequence[float | None], *, label: str, width: float = 140.0,
              height: float = 28.0) -> Markup:
    """A trend line over runs (oldest first); gaps where a run had no value; the last point
    is marked."""
    finite = _finite(points)
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 3.0
    n = len(points)

    def xy(i: int, v: float) -> tuple[float, float]:
        px = pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        py = pad + (height - 2 * pad) * (1.0 - (v - lo) / (hi - lo))
        return px, py

    parts: list[str] = []
    segment: list[tuple[float, float]] = []
    for i, v in enumerate([*points, None]):
        if v is None or not math.isfinite(v):
            if len(segment) > 1:
                coords = " ".join(f"{coord(x)},{coord(y)}" for x, y in segment)
                parts.append(_el("polyline", {"points": coords, "fill": "none",
                                              "stroke": PALETTE[0], "stroke-width": "1.5"}))
            elif segment:
                # A lone value between gaps: a dot, since a line needs two points.
                parts.append(_el("circle", {"cx": segment[0][0], "cy": segment[0][1],
                                            "r": "1.5", "fill": PALETTE[0]}))
            segment = []
            continue
        segment.append(xy(i, v))
    last = points[-1] if points else None
    if last is not None and math.isfinite(last):
        cx, cy = xy(n - 1, last)
        parts.append(_el("circle", {"cx": cx, "cy": cy, "r": "2.5", "fill": PALETTE[5]}))
    values = ", ".join(num(p) for p in points)
    return _svg(width, height, f"{label}: {values}", "".join(parts), "chart spark")
