"""Reading the uptime files, and the automatic monthly run of the SLA credits.

The service runs `MonthlyCredits` every hour. From the 1st to the 10th of a month (UTC) it reads
the configured uptime source for the month before and, if that month fell short of 99.5 %, asks
the Billing port for the month's Pro accounts and net spends. It credits once the billing data
of the month is final (the port says so; for the ledger, an import was made after the month
ended). If the data is not final by the 8th, the agents are told; on the 10th the credits are
given on what there is, marked provisional, and topped up on a later hourly run once the data is
final. Running it again (every hour, after a restart, in a second process) credits nobody twice:
that is the `sla_credits` row's unique key, not this loop's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts import uptime as uptime_data
from accounts.billing import Billing, BillingUnavailable, MonthSpends
from accounts.credits import (
    Applied,
    LineStatus,
    NoticeRoutes,
    apply_credits,
    gives_credits,
    plan_credits,
    record_refusal,
)
from accounts.ledger_billing import LedgerBilling
from accounts.money import cents
from accounts.settings import UptimeSettings
from accounts.tables import SlaCredit
from accounts.uptime import Uptime, UptimeError
from tickets.months import Month
from tickets.notices import notify_agents
from tickets.periodic import run_every
from tickets.ports import Clock, Renderer

log = logging.getLogger(__name__)

LAST_DAY = 10  # credits are applied by the 10th of the following month
WARN_DAY = 8  # billing data not final by then: the agents are told
INTERVAL = 3600.0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UptimeError(f"cannot read {path}: {error}") from None


def checks_uptime(month: Month, checks: Path, maintenance: Path | None = None) -> Uptime:
    """The month's uptime from a checks file and an optional maintenance file."""
    windows = uptime_data.parse_windows(_read(maintenance), maintenance.name) if maintenance else []
    parsed = uptime_data.parse_checks(_read(checks), checks.name)
    return uptime_data.from_checks(parsed, month, windows, source=f"checks file {checks.name}")


def instatus_uptime(month: Month, export: Path) -> Uptime:
    """The month's uptime from an Instatus-style JSON export."""
    incidents, maintenances = uptime_data.parse_instatus(_read(export), export.name)
    return uptime_data.from_incidents(
        incidents, month, maintenances, source=f"Instatus export {export.name}"
    )


def configured_uptime(source: UptimeSettings, month: Month) -> Uptime:
    """The month's uptime from the source the settings name."""
    if source.instatus_file is not None:
        return instatus_uptime(month, source.instatus_file)
    assert source.checks_file is not None
    return checks_uptime(month, source.checks_file, source.maintenance_file)


class MonthlyCredits:
    """The periodic task: last month's SLA credits, applied between the 1st and the 10th."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        source: UptimeSettings,
        routes: NoticeRoutes,
        *,
        clock: Clock,
        billing: Billing | None = None,
        wakeup: Callable[[], None] | None = None,
        interval: float = INTERVAL,
    ) -> None:
        self._sessions = sessions
        self._templates = templates
        self._source = source
        self._routes = routes
        self._clock = clock
        self._billing = billing or LedgerBilling(sessions)
        self._wakeup = wakeup
        self._interval = interval
        self._told: set[tuple[Month, str]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Check at start and then every interval until `stop`; a failure waits for the next."""
        failed = "SLA credits: the monthly run failed; trying again later"
        await run_every(self._interval, self._run_now, stop, log=log, failed=failed)

    async def _run_now(self) -> None:
        try:
            await self.run_once(self._clock())
        except UptimeError as error:
            log.warning("SLA credits: %s", error)

    async def run_once(self, now: datetime) -> Applied | None:
        """Credit the previous month if `now` is the 1st to the 10th and it fell short; after
        the 10th, only top up provisional credits once the month's data is final."""
        day = now.astimezone(UTC).day
        month = Month.of(now).previous()
        settling = day > LAST_DAY
        if settling and not await self._provisional(month):
            log.debug("SLA credits: past the %dth of the month, nothing to do", LAST_DAY)
            return None
        try:
            uptime = configured_uptime(self._source, month)
        except UptimeError as error:
            await self._tell_agents(month, str(error), now)
            raise
        if not uptime.complete:
            log.warning(
                "SLA credits: the uptime data for %s does not reach the month's end yet; "
                "checking again later",
                month,
            )
            if day == LAST_DAY:
                await self._tell_agents(month, "the uptime data does not reach its end", now)
            return None
        if not gives_credits(uptime):
            log.info("SLA credits: uptime %s %% in %s; no credits", uptime.percent, month)
            return None
        spends = await self._spends(month, now)
        if spends is None:
            return None
        if not spends.complete:
            if day >= WARN_DAY and not settling:
                await self._tell_waiting(month, spends, now)
            if day < LAST_DAY or settling:
                log.info("SLA credits: the billing data of %s is not final yet; waiting", month)
                return None
            log.warning("SLA credits: the %dth and %s is not final: crediting provisionally",
                        LAST_DAY, month)  # fmt: skip
        async with self._sessions.begin() as session:
            plan = await plan_credits(session, month, uptime, spends)
        applied = await apply_credits(
            self._sessions,
            plan,
            templates=self._templates,
            routes=self._routes,
            at=now,
            actor="system:sla-credits",
            billing=self._billing,
        )
        log.info(
            "SLA credits for %s: %d accounts credited now (%s), %d before",
            month,
            len(applied.credited),
            cents(applied.total),
            applied.already + len(plan.with_status(LineStatus.CREDITED)),
        )
        if applied.credited and self._wakeup is not None:
            self._wakeup()
        return applied

    async def _spends(self, month: Month, now: datetime) -> MonthSpends | None:
        try:
            return await self._billing.month_spends(month, now)
        except BillingUnavailable as error:
            await self._tell_agents(month, f"the billing system cannot be read: {error}", now)
            log.warning("SLA credits: %s", error)
            return None

    async def _provisional(self, month: Month) -> bool:
        async with self._sessions() as session:
            found = await session.scalar(
                select(SlaCredit.id)
                .where(SlaCredit.month == str(month), SlaCredit.provisional.is_(True))
                .limit(1)
            )
        return found is not None

    async def _tell_waiting(self, month: Month, spends: MonthSpends, now: datetime) -> None:
        """The agents hear once (per process) that the month's billing data is not final."""
        await self._tell_once(
            month, "not final", "sla_credits_waiting", now, as_of=spends.as_of, last_day=LAST_DAY
        )

    async def _tell_agents(self, month: Month, problem: str, now: datetime) -> None:
        """The agents hear once (per process) that a month's credits are stuck, and why."""
        await self._tell_once(
            month, problem, "sla_credits_problem", now, problem=problem, last_day=LAST_DAY
        )

    async def _tell_once(
        self, month: Month, what: str, event: str, now: datetime, **facts: Any
    ) -> None:
        if (month, what) in self._told:
            return
        self._told.add((month, what))
        async with self._sessions.begin() as session:
            if event == "sla_credits_problem":
                record_refusal(
                    session, month=month, reason=what[:500], actor="system:sla-credits", at=now
                )
            notify_agents(
                session,
                self._templates,
                event,
                at=now,
                month=str(month),
                month_label=month.label,
                **facts,
            )
        if self._wakeup is not None:
            self._wakeup()
