"""Monthly SLA reports as people read them: text (terminal and Telegram), CSV, and the chart.

Shared by `/report` in the agents' group and `supportbot report`. The numbers come from
`tickets.reports` (pure) over rows from `tickets.report_query`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.format import MAX_TEXT, clip, utf16_len
from supportbot.templates import Templates
from tickets import report_query
from tickets.policy import SlaPolicy
from tickets.reports import (
    Month,
    MonthlyReport,
    ResponseRow,
    build_report,
    period_of,
    report_from_times,
)

# What the Telegram text shows before it says "… and N more": tried in turn until the text fits.
TELEGRAM_LIMITS = ((10, 10, 12), (5, 5, 8), (3, 3, 5), (0, 0, 3))
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
) -> str:
    """The report as plain text; the lists are cut to the given lengths (None: all)."""
    shown_agents = report.by_agent[:agents] if agents is not None else report.by_agent
    return templates.render(
        "reports/month",
        report=report,
        late=report.late[:late] if late is not None else report.late,
        overdue=report.overdue[:overdue] if overdue is not None else report.overdue,
        agents=shown_agents,
        more_agents=len(report.by_agent) - len(shown_agents),
        h=_hours,
        pct=_percent,
    )


def telegram_text(templates: Templates, report: MonthlyReport, *, room: int = MAX_TEXT) -> str:
    """The report as one Telegram message: shorter lists until it fits `room` UTF-16 units."""
    text = ""
    for late, overdue, agents in TELEGRAM_LIMITS:
        text = report_text(templates, report, late=late, overdue=overdue, agents=agents)
        if utf16_len(text) <= room:
            return text
    return clip(text, room)


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
        waits = await report_query.open_waits(session, period.end)
        if rows:
            every = await report_query.responses(session, period.start, period.end)
            return build_report(period, policy, every, waits), every
        times, late = await report_query.response_times(
            session, period.start, period.end, policy.response_hours
        )
    return report_from_times(period, policy, times, late, waits), late
