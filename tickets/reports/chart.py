"""The report's chart: how response times are spread, per plan, against the 6 h and 24 h lines.

One panel per plan: a histogram of response times in business hours, one bar per business hour up
to twice the SLA, and a last bar for everything slower. A dashed line marks the internal target,
a solid one the SLA, each labelled with the share of responses inside it. The result is a PNG
(bytes), drawn with matplotlib's Agg backend through its object API (no pyplot state, so it can
run in a worker thread). matplotlib is imported on first use: the service starts without it.
"""

from __future__ import annotations

import io
from typing import Final

from tickets.reports.figures import MonthlyReport, nearest_rank

WIDTH_IN: Final = 10.0
PANEL_IN: Final = 3.2
DPI: Final = 110
_COLOURS: Final = {"pro": "#7b4fd6", "basic": "#2a7fbf"}


def _share(values: tuple[float, ...], limit: float) -> str:
    if not values:
        return "—"
    inside = sum(1 for v in values if v <= limit)
    return f"{100 * inside / len(values):.0f} %"


def render_png(report: MonthlyReport) -> bytes:
    """Draw the report's chart as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy import
    from matplotlib.figure import Figure  # noqa: PLC0415 - lazy import

    panels = report.distribution or (("all plans", ()),)
    figure = Figure(figsize=(WIDTH_IN, 0.9 + PANEL_IN * len(panels)), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    cap = max(2 * report.sla_hours, report.target_hours + 1)
    edges = [float(h) for h in range(int(cap) + 1)]
    if edges[-1] < cap:
        edges.append(cap)
    edges.append(cap + max(2.0, cap / 12))  # the overflow bar
    so_far = "" if report.period.complete else " (so far)"
    figure.suptitle(
        f"Response times, {report.period.month.label}{so_far} — business hours, per plan",
        fontsize=13,
    )
    for ax, (plan, values) in zip(axes, panels, strict=True):
        clipped = [min(v, cap + 0.5) for v in values]
        colour = _COLOURS.get(plan, "#5f6b73")
        if clipped:
            ax.hist(clipped, bins=edges, color=colour, alpha=0.85, edgecolor="white")
        else:
            ax.text(0.5, 0.5, "no responses", transform=ax.transAxes, ha="center", va="center")
        ax.axvline(report.target_hours, color="#e0a100", linestyle="--", linewidth=2)
        ax.axvline(report.sla_hours, color="#c62828", linestyle="-", linewidth=2)
        top = ax.get_ylim()[1]
        ax.text(
            report.target_hours,
            top * 0.95,
            f" {report.target_hours:g} h: {_share(values, report.target_hours)}",
            color="#8a6300",
            va="top",
        )
        ax.text(
            report.sla_hours,
            top * 0.95,
            f" {report.sla_hours:g} h: {_share(values, report.sla_hours)}",
            color="#c62828",
            va="top",
        )
        p50, p90 = nearest_rank(values, 50), nearest_rank(values, 90)
        figures = (
            f"{len(values):,} responses · p50 {p50:.1f} h · p90 {p90:.1f} h"
            if p50 is not None and p90 is not None
            else "0 responses"
        )
        ax.set_title(f"{plan.capitalize()} — {figures}", loc="left", fontsize=11)
        ax.set_xlim(0, edges[-1])
        ticks = list(range(0, int(cap), 6))
        ax.set_xticks([*ticks, (cap + edges[-1]) / 2])
        ax.set_xticklabels([*(str(t) for t in ticks), f">{cap:g}"])
        ax.set_ylabel("responses")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("business hours from the customer's message to the delivered answer")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
