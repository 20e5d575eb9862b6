"""Inline SVG charts, one string each: what the offline `driftloop drift --html` report and the
gateway's web console draw (no scripts, no external assets; the page's CSS may scale them)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime

REFERENCE_COLOUR = "#4c78a8"
CURRENT_COLOUR = "#f58518"
FLOOR_COLOUR = "#b00020"


def histogram_svg(
    labels: Sequence[str],
    reference: Iterable[float],
    current: Iterable[float],
    *,
    numeric: bool,
    width: int = 640,
    height: int = 180,
) -> str:
    """Reference and current share of rows per bin, side by side (shares in [0, 1], one per
    label: a list or a numpy array). Numeric
    bins are labelled "a to b": only the first and last bound are written under the axis."""
    bottom = 30
    ref = [float(r) for r in reference]
    cur = [float(c) for c in current]
    top = max([*ref, *cur, 0.0]) or 1.0
    slot = (width - 20) / max(len(labels), 1)
    bar = slot * 0.4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + bottom}" '
        f'viewBox="0 0 {width} {height + bottom}" role="img" class="chart histogram">'
        f'<line x1="10" y1="{height}" x2="{width - 10}" y2="{height}" stroke="#888"/>',
        f'<text x="12" y="10" font-size="10" fill="#666">{top:.1%} of rows</text>',
    ]
    for i, (label, r, c) in enumerate(zip(labels, ref, cur, strict=True)):
        x = 10 + i * slot + slot * 0.1
        pair = ((0.0, r, REFERENCE_COLOUR, "reference"), (bar, c, CURRENT_COLOUR, "current"))
        for offset, share, colour, who in pair:
            h = (height - 16) * share / top
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{height - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{html.escape(label)}: {who} '
                f"{share:.2%}</title></rect>"
            )
        if not numeric:
            short = label if len(label) <= 12 else label[:11] + "…"
            parts.append(
                f'<text x="{x + bar:.1f}" y="{height + 14}" font-size="10" '
                f'text-anchor="middle">{html.escape(short)}</text>'
            )
    if numeric and labels:
        first, last = labels[0].split(" to ")[0], labels[-1].split(" to ")[-1]
        parts.append(f'<text x="10" y="{height + 14}" font-size="11">{html.escape(first)}</text>')
        parts.append(
            f'<text x="{width - 10}" y="{height + 14}" font-size="11" text-anchor="end">'
            f"{html.escape(last)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def series_svg(
    points: Sequence[tuple[datetime, float]],
    *,
    floor: float | None = None,
    label: str = "",
    width: int = 640,
    height: int = 160,
) -> str:
    """A metric over time (points in time order) as a line with a dot per point, and the
    `floor` it must stay above as a dashed line."""
    bottom, left = 24, 44
    if not points:
        return '<p class="note">no figures yet</p>'
    values = [v for _, v in points] + ([floor] if floor is not None else [])
    lo, hi = min(values), max(values)
    if not hi > lo:
        lo, hi = lo - 0.05, hi + 0.05
    t0 = points[0][0].timestamp()
    span = (points[-1][0].timestamp() - t0) or 1.0

    def x(at: datetime) -> float:
        return left + (width - left - 10) * (at.timestamp() - t0) / span

    def y(value: float) -> float:
        return 8 + (height - 16) * (hi - value) / (hi - lo)

    line = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in points)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + bottom}" '
        f'viewBox="0 0 {width} {height + bottom}" role="img" class="chart series">',
        f'<line x1="{left}" y1="{height}" x2="{width - 10}" y2="{height}" stroke="#888"/>',
        f'<text x="2" y="{y(hi) + 4:.1f}" font-size="10" fill="#666">{hi:.3g}</text>',
        f'<text x="2" y="{y(lo) + 4:.1f}" font-size="10" fill="#666">{lo:.3g}</text>',
    ]
    if floor is not None:
        parts.append(
            f'<line x1="{left}" y1="{y(floor):.1f}" x2="{width - 10}" y2="{y(floor):.1f}" '
            f'stroke="{FLOOR_COLOUR}" stroke-dasharray="6 4"><title>floor {floor:.4g}</title>'
            "</line>"
        )
    parts.append(
        f'<polyline points="{line}" fill="none" stroke="{REFERENCE_COLOUR}" stroke-width="2"/>'
    )
    for at, v in points:
        parts.append(
            f'<circle cx="{x(at):.1f}" cy="{y(v):.1f}" r="3" fill="{REFERENCE_COLOUR}">'
            f"<title>{html.escape(label)} {v:.4g} at {at:%Y-%m-%d %H:%M:%S}</title></circle>"
        )
    first, last = points[0][0], points[-1][0]
    parts.append(
        f'<text x="{left}" y="{height + 16}" font-size="10">{first:%m-%d %H:%M}</text>'
        f'<text x="{width - 10}" y="{height + 16}" font-size="10" text-anchor="end">'
        f"{last:%m-%d %H:%M}</text></svg>"
    )
    return "".join(parts)
