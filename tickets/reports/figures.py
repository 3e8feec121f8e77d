"""Monthly SLA reports: response times in business hours, per plan, channel and agent. Pure code.

A report covers one calendar month in the SLA calendar's time zone, or the current month so far.
It is built from rows the database hands over (`tickets/reports/query.py` reads them):

* `ResponseRow` — one measured response (the `responses` table): a wait answered by an agent's
  delivered reply. A response belongs to the month it was *answered* in.
* `WaitRow` — a wait that had not been answered when the period ended: still waiting now, or
  answered only after the period's end.

Definitions (the README's "Reports" section repeats them for agents):

* Percentiles are **nearest-rank**: for the n response times sorted ascending x₁ ≤ … ≤ xₙ, the
  p-th percentile is x_k with k = ⌈p·n/100⌉ (k ≥ 1). It is always one of the measured times —
  p50 of 1, 2, 3, 4 is 2, p90 of ten values is the 9th. With no responses there is none.
* "Within 6 h" / "within 24 h" count responses of *at most* the internal target / the SLA
  (`SlaPolicy.target_hours`, `response_hours`): an answer at exactly 24 business hours is on time.
* Breaches are (1) responses in the period that took longer than the SLA, and (2) waits still
  unanswered at the period's end whose due time (`SlaPolicy.due_at`) had passed by then — also
  those answered later, which then show up again, as late responses, in the month they were
  answered in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from tickets.months import InvalidMonth, Month
from tickets.policy import SlaPolicy

__all__ = [
    "AgentScores",
    "Breakdown",
    "InvalidMonth",
    "LateResponse",
    "Month",
    "MonthlyReport",
    "OverdueWait",
    "ResponseRow",
    "ResponseTime",
    "Summary",
    "WaitRow",
    "build_report",
    "nearest_rank",
    "period_of",
    "report_from_times",
    "tag_breakdown",
]

NO_AGENT: Final = "(no agent)"


@dataclass(frozen=True)
class Period:
    """What a report covers: [start, end), where `end` is the month's end or, so far, now."""

    month: Month
    start: datetime
    end: datetime
    complete: bool


def period_of(month: Month, policy: SlaPolicy, now: datetime) -> Period:
    """The period of a report on `month` asked for at `now`; a future month is refused."""
    tz = policy.calendar.tz
    start, end = month.start_in(tz), month.next().start_in(tz)
    if start > now:
        raise InvalidMonth(f"{month} has not begun yet")
    return Period(month, start, min(end, now), complete=end <= now)


@dataclass(frozen=True)
class ResponseRow:
    """One measured response: a wait and the delivered agent reply that ended it."""

    ticket: int
    plan: str
    channel: str
    agent: str | None
    waiting_since: datetime
    answered_at: datetime
    business_hours: float


# What the figures need of a response: (plan, channel, agent, business hours). A plain tuple,
# not a dataclass: a busy month makes 150,000 of them, and a tuple is built ten times faster.
ResponseTime = tuple[str, str, str | None, float]


@dataclass(frozen=True)
class WaitRow:
    """A wait that was unanswered at the end of the period (answered later, or still open)."""

    ticket: int
    plan: str
    channel: str
    waiting_since: datetime
    answered_at: datetime | None


@dataclass(frozen=True)
class Summary:
    """Response-time figures of a set of responses, in business hours."""

    responses: int
    p50: float | None
    p90: float | None
    within_target: int
    within_sla: int

    @property
    def target_share(self) -> float | None:
        """Share of responses within the internal target (None without responses)."""
        return self.within_target / self.responses if self.responses else None

    @property
    def sla_share(self) -> float | None:
        """Share of responses within the SLA (None without responses)."""
        return self.within_sla / self.responses if self.responses else None


@dataclass(frozen=True)
class Breakdown:
    """The summary of one group: a plan, a channel or an agent."""

    name: str
    summary: Summary


@dataclass(frozen=True)
class AgentScores:
    """Satisfaction scores (1–5) given in the month for one agent's tickets."""

    name: str
    count: int
    average: float


@dataclass(frozen=True)
class LateResponse:
    """A response that took longer than the SLA."""

    ticket: int
    plan: str
    channel: str
    agent: str
    waiting_since: datetime
    answered_at: datetime
    business_hours: float


@dataclass(frozen=True)
class OverdueWait:
    """A wait that was past due and still unanswered when the period ended."""

    ticket: int
    plan: str
    channel: str
    waiting_since: datetime
    due_at: datetime
    hours_waited: float  # business hours from the wait's start to the period's end
    answered_at: datetime | None  # None: still waiting


@dataclass(frozen=True)
class MonthlyReport:
    """Everything `/report` and `supportbot report` show about one month."""

    period: Period
    target_hours: float
    sla_hours: float
    overall: Summary
    by_plan: tuple[Breakdown, ...]
    by_channel: tuple[Breakdown, ...]
    by_agent: tuple[Breakdown, ...]
    late: tuple[LateResponse, ...]
    overdue: tuple[OverdueWait, ...]
    # Response times per plan, sorted ascending: what the chart draws.
    distribution: tuple[tuple[str, tuple[float, ...]], ...]
    # Per tag of the answered ticket (`/tag`); a response of a ticket with two tags counts in both.
    by_tag: tuple[Breakdown, ...] = ()
    # Satisfaction scores given in the month, per agent credited, the most scored first.
    satisfaction: tuple[AgentScores, ...] = ()

    @property
    def breaches(self) -> int:
        return len(self.late) + len(self.overdue)


def nearest_rank(ordered: Sequence[float], percent: int) -> float | None:
    """The nearest-rank percentile of values sorted ascending: x_k, k = ceil(p·n/100)."""
    if not 0 < percent <= 100:
        raise ValueError(f"a percentile is in (0, 100], got {percent}")
    n = len(ordered)
    if n == 0:
        return None
    rank = max(1, -(-percent * n // 100))
    return ordered[rank - 1]


def summarize(ordered: Sequence[float], policy: SlaPolicy) -> Summary:
    """Figures of response times sorted ascending."""
    return Summary(
        responses=len(ordered),
        p50=nearest_rank(ordered, 50),
        p90=nearest_rank(ordered, 90),
        within_target=_count_at_most(ordered, policy.target_hours),
        within_sla=_count_at_most(ordered, policy.response_hours),
    )


def _count_at_most(ordered: Sequence[float], limit: float) -> int:
    low, high = 0, len(ordered)
    while low < high:
        middle = (low + high) // 2
        if ordered[middle] <= limit:
            low = middle + 1
        else:
            high = middle
    return low


def _plan_order(name: str) -> tuple[int, str]:
    return ({"pro": 0, "basic": 1}.get(name, 2), name)


def build_report(
    period: Period,
    policy: SlaPolicy,
    responses: Iterable[ResponseRow],
    waits: Iterable[WaitRow] = (),
) -> MonthlyReport:
    """Compute a month's report from whole response rows and the waits open at its end."""
    inside = [r for r in responses if period.start <= r.answered_at < period.end]
    times = [(r.plan, r.channel, r.agent, r.business_hours) for r in inside]
    return report_from_times(period, policy, times, inside, waits)


def report_from_times(
    period: Period,
    policy: SlaPolicy,
    times: Iterable[ResponseTime],
    late: Iterable[ResponseRow],
    waits: Iterable[WaitRow] = (),
) -> MonthlyReport:
    """Compute a month's report from the times of its responses (answered in the period) and
    the whole rows of at least those over the SLA: the figures need no timestamps, so a
    month of 150,000 responses is read without converting 300,000 of them."""
    # One dict lookup per response: group by (plan, channel, agent) first, then merge the few
    # groups. Sorting a concatenation of sorted runs is a merge (timsort), and times read in
    # order of hours (as the query reads them) are sorted runs already.
    combos: dict[tuple[str, str, str | None], list[float]] = defaultdict(list)
    for plan, channel, agent, hours in times:
        combos[plan, channel, agent].append(hours)
    everything: list[float] = []
    plans: dict[str, list[float]] = defaultdict(list)
    channels: dict[str, list[float]] = defaultdict(list)
    agents: dict[str, list[float]] = defaultdict(list)
    for (plan, channel, agent), values in combos.items():
        values.sort()
        everything += values
        plans[plan] += values
        channels[channel] += values
        agents[agent or NO_AGENT] += values
    over = [
        LateResponse(
            r.ticket,
            r.plan,
            r.channel,
            r.agent or NO_AGENT,
            r.waiting_since,
            r.answered_at,
            r.business_hours,
        )
        for r in late
        if r.business_hours > policy.response_hours and period.start <= r.answered_at < period.end
    ]
    for values in (everything, *plans.values(), *channels.values(), *agents.values()):
        values.sort()

    def breakdown(
        groups: dict[str, list[float]], key: Callable[[str], tuple[int, str]]
    ) -> tuple[Breakdown, ...]:
        names = sorted(groups, key=key)
        return tuple(Breakdown(name, summarize(groups[name], policy)) for name in names)

    return MonthlyReport(
        period=period,
        target_hours=policy.target_hours,
        sla_hours=policy.response_hours,
        overall=summarize(everything, policy),
        by_plan=breakdown(plans, _plan_order),
        by_channel=breakdown(channels, lambda name: (0, name)),
        by_agent=breakdown(agents, lambda name: (-len(agents[name]), name)),
        late=tuple(sorted(over, key=lambda r: (-r.business_hours, r.ticket))),
        overdue=_overdue(period, policy, waits),
        distribution=tuple((name, tuple(plans[name])) for name in sorted(plans, key=_plan_order)),
    )


def tag_breakdown(tagged: Iterable[tuple[str, float]], policy: SlaPolicy) -> tuple[Breakdown, ...]:
    """Figures per tag from (tag, business hours) pairs, the most used tag first."""
    groups: dict[str, list[float]] = defaultdict(list)
    for tag, hours in tagged:
        groups[tag].append(hours)
    names = sorted(groups, key=lambda name: (-len(groups[name]), name))
    return tuple(Breakdown(name, summarize(sorted(groups[name]), policy)) for name in names)


def _overdue(
    period: Period, policy: SlaPolicy, waits: Iterable[WaitRow]
) -> tuple[OverdueWait, ...]:
    found: list[OverdueWait] = []
    for wait in waits:
        if wait.waiting_since >= period.end:
            continue
        if wait.answered_at is not None and wait.answered_at < period.end:
            continue  # answered within the period: a response, not an open wait
        due = policy.due_at(wait.waiting_since)
        if due > period.end:
            continue
        found.append(
            OverdueWait(
                ticket=wait.ticket,
                plan=wait.plan,
                channel=wait.channel,
                waiting_since=wait.waiting_since,
                due_at=due,
                hours_waited=policy.calendar.hours_between(wait.waiting_since, period.end),
                answered_at=wait.answered_at,
            )
        )
    return tuple(sorted(found, key=lambda w: (w.due_at, w.ticket)))
