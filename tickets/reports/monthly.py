"""Monthly SLA reports as people read them: a month loaded, as text and CSV.

Shared by `/report` in the agents' group (which fits the text into one Telegram message, see
`bot/reports.py`) and `supportbot report`. The numbers come from
`tickets.reports.figures` (pure) over rows from `tickets.reports.query`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.policy import SlaPolicy
from tickets.rendering import Templates
from tickets.reports import query
from tickets.reports.figures import (
    AgentScores,
    Month,
    MonthlyReport,
    ResponseRow,
    build_report,
    period_of,
    report_from_times,
    tag_breakdown,
)

CSV_HEADER_TIMES = ("ticket", "plan", "channel", "agent", "waiting_since", "answered_at")


def _hours(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def report_text(
    templates: Templates,
    report: MonthlyReport,
    *,
    late: int | None = None,
    overdue: int | None = None,
    agents: int | None = None,
    tags: int | None = None,
) -> str:
    """The report as plain text; the lists are cut to the given lengths (None: all)."""
    shown_agents = report.by_agent[:agents] if agents is not None else report.by_agent
    shown_tags = report.by_tag[:tags] if tags is not None else report.by_tag
    return templates.render(
        "reports/month",
        report=report,
        late=report.late[:late] if late is not None else report.late,
        overdue=report.overdue[:overdue] if overdue is not None else report.overdue,
        agents=shown_agents,
        more_agents=len(report.by_agent) - len(shown_agents),
        tags=shown_tags,
        more_tags=len(report.by_tag) - len(shown_tags),
        h=_hours,
        pct=_percent,
    )


def caption(templates: Templates, report: MonthlyReport) -> str:
    """The chart's caption in the agents' group."""
    return templates.render("agents/report_caption", report=report)


def csv_text(rows: Iterable[ResponseRow], policy: SlaPolicy) -> str:
    """One CSV line per response, with the business hours and whether it met target and SLA."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            *CSV_HEADER_TIMES,
            "business_hours",
            f"within_{policy.target_hours:g}h",
            f"within_{policy.response_hours:g}h",
        ]
    )
    for row in rows:
        writer.writerow(
            [
                row.ticket,
                row.plan,
                row.channel,
                row.agent or "",
                row.waiting_since.isoformat(),
                row.answered_at.isoformat(),
                f"{row.business_hours:.4f}",
                "yes" if row.business_hours <= policy.target_hours else "no",
                "yes" if row.business_hours <= policy.response_hours else "no",
            ]
        )
    return out.getvalue()


async def load(
    sessions: async_sessionmaker[AsyncSession],
    policy: SlaPolicy,
    now: datetime,
    month: Month | None = None,
    *,
    rows: bool = False,
) -> tuple[MonthlyReport, list[ResponseRow]]:
    """A month's report (default: the current month so far); with `rows`, also every response
    it counts as a whole row (for the CSV), else only those over the SLA."""
    period = period_of(month or Month.of(now, policy.calendar.tz), policy, now)
    async with sessions() as session:
        waits = await query.open_waits(session, period.end)
        by_tag = tag_breakdown(await query.tagged_times(session, period.start, period.end), policy)
        scores = tuple(
            AgentScores(name, n, average)
            for name, n, average in await query.agent_scores(session, period.start, period.end)
        )
        if rows:
            every = await query.responses(session, period.start, period.end)
            report = build_report(period, policy, every, waits)
            return replace(report, by_tag=by_tag, satisfaction=scores), every
        times, late = await query.response_times(
            session, period.start, period.end, policy.response_hours
        )
    report = report_from_times(period, policy, times, late, waits)
    return replace(report, by_tag=by_tag, satisfaction=scores), late
