"""The composition root: settings → database → core → workers and channels, run and shut down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounts.account_claims import AccountClaims
from accounts.billing import Billing, load_billing
from accounts.credit_run import MonthlyCredits
from accounts.http_billing import HttpBilling, write_sender
from accounts.linking import Linker
from accounts.lookups import BalanceLookups
from accounts.payouts import PayoutDesk
from accounts.plans import AddressPlans, PlanRefresh, following
from accounts.refund_desk import RefundDesk
from bot.accounts import AccountServices
from bot.channel import TelegramChannel
from mail.imap import ImapIntake, health_notices
from mail.smtp import SmtpSender
from supportbot import db, http_server
from supportbot.http_server import Probes, Roles, make_app
from supportbot.leader_locks import KEEPALIVES
from supportbot.leadership import (
    IMAP,
    JOBS,
    TELEGRAM,
    AdvisoryLeadership,
    Leadership,
    Solo,
    while_leading,
)
from supportbot.metrics import CountingSender, PrometheusEvents
from supportbot.settings import Settings, notice_routes
from supportbot.single_process import only_process
from supportbot.web import serve_scores
from tickets.desk import Desk
from tickets.errors import SupportbotError
from tickets.model import Route
from tickets.outbox import Sender, Wakeups
from tickets.outbox_worker import OutboxWorker, take_back_leases
from tickets.periodic import run_every
from tickets.policy import SlaPolicy
from tickets.ports import NO_EVENTS, Clock, Events, utcnow
from tickets.rendering import Templates, default_directory
from tickets.retention import prune_periodically
from tickets.satisfaction import Satisfaction, ScoreLinks
from tickets.vitals import database_answers, read_vitals
from tickets.watch import SlaWatch, WatchRules

log = logging.getLogger("supportbot")


class NothingToRun(SupportbotError):
    """No customer channel is configured."""


class DatabaseBehind(SupportbotError):
    """The database schema is older than this code."""


def policy_from(settings: Settings) -> SlaPolicy:
    sla = settings.sla
    return SlaPolicy(
        calendar=sla.calendar,
        response_hours=sla.response_hours,
        target_hours=sla.target_hours,
        risk_hours=sla.risk_hours,
        reopen_days=sla.reopen_days,
    )


async def prepare_database(engine: AsyncEngine) -> None:
    """SQLite upgrades itself; PostgreSQL must be upgraded on purpose (`supportbot db upgrade`)."""
    if db.is_sqlite(engine):
        await db.upgrade(engine)
        return
    current, head = await db.revisions(engine)
    if current != head:
        raise DatabaseBehind(
            f"the database is at schema revision {current or 'none'} and this version needs "
            f"{head}: run `supportbot db upgrade`"
        )


@dataclass
class Service:
    """Everything the running desk is made of, built once and shared by the workers."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    policy: SlaPolicy
    templates: Templates
    desk: Desk
    wakeups: Wakeups
    clock: Clock
    refunds: RefundDesk
    payouts: PayoutDesk
    billing: Billing
    events: Events = NO_EVENTS
    # Which roles this replica leads (`is_leader(role)`, `roles()`), set by `run`.
    leadership: Leadership | None = None

    def outbox_worker(self, senders: dict[Route, Sender]) -> OutboxWorker:
        return OutboxWorker(
            self.sessions, senders, self.desk, clock=self.clock, wakeup=self.wakeups.new()
        )


@asynccontextmanager
async def build(
    settings: Settings, *, clock: Clock = utcnow, events: Events = NO_EVENTS
) -> AsyncIterator[Service]:
    """Open the database (migrating SQLite), wire the core, and dispose of it all on exit."""
    async with db.open_engine(settings.database_url) as engine:
        await prepare_database(engine)
        sessions = db.session_factory(engine)
        policy = policy_from(settings)
        templates = Templates(default_directory(), default_locale=settings.agent_language)
        wakeups = Wakeups()
        domain = (settings.support_address or "@supportbot.invalid").rpartition("@")[2]
        satisfaction = satisfaction_from(settings, sessions, templates, clock, wakeups, domain)
        desk = Desk(
            sessions,
            policy,
            templates,
            clock=clock,
            wakeup=wakeups,
            mail_domain=domain,
            plans=AddressPlans(),
            events=events,
            auto_close_days=settings.sla.auto_close_days,
            satisfaction=satisfaction,
        )
        billing = following(
            billing_of(settings, sessions), sessions, templates, clock=clock, wakeup=wakeups
        )
        refunds = RefundDesk(
            sessions,
            templates,
            billing=billing,
            clock=clock,
            approval_above=settings.refund_approval_above,
            max_age=settings.billing_max_age,
            mail_domain=domain,
            wakeup=wakeups,
        )
        payouts = PayoutDesk(sessions, templates, clock=clock, mail_domain=domain, wakeup=wakeups)
        try:
            yield Service(
                settings,
                engine,
                sessions,
                policy,
                templates,
                desk,
                wakeups,
                clock,
                refunds,
                payouts,
                billing,
                events,
            )
        finally:
            await billing.close()


def satisfaction_from(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    templates: Templates,
    clock: Clock,
    wakeups: Wakeups,
    domain: str,
) -> Satisfaction | None:
    """The satisfaction ask after a close, when `CSAT_ENABLED` (issue 15, point 7)."""
    found = settings.satisfaction
    if found is None:
        return None
    links = ScoreLinks(found.secret, found.base_url)
    return Satisfaction(sessions, templates, links, clock=clock, wakeup=wakeups, mail_domain=domain)


def billing_of(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Billing:
    """The system of record the settings name: a billing service over HTTP, or a factory's."""
    if settings.billing_http is not None:
        return HttpBilling(settings.billing_http)
    return load_billing(settings.billing_factory, sessions)


def missing_channels_message() -> str:
    return (
        "nothing to run: no channel is configured. Set TELEGRAM_TOKEN and AGENT_CHAT_ID for "
        "Telegram, or IMAP_HOST, IMAP_USER, IMAP_PASSWORD, SMTP_HOST and SUPPORT_ADDRESS for email "
        "(see .env.example)"
    )


async def run(
    settings: Settings,
    stop: asyncio.Event,
    *,
    clock: Clock = utcnow,
    leadership_retry: float = 1.0,
) -> None:
    """Run every configured channel and the outbox workers until `stop` is set.

    On PostgreSQL any number of these run side by side: the Telegram intake and every call to
    Telegram, the IMAP reader and the periodic jobs each run on the one replica that leads
    them; mail and billing writes go out from every replica.
    """
    channels = settings.channels()
    if not channels:
        raise NothingToRun(missing_channels_message())
    unavailable = [name for name in channels if name not in AVAILABLE_CHANNELS]
    if unavailable:
        raise SupportbotError(
            f"the {', '.join(unavailable)} channel is configured, but this version of supportbot "
            "does not include it yet"
        )
    events = PrometheusEvents()
    with only_process(settings.database_url):
        async with build(settings, clock=clock, events=events) as service:
            await _run_service(
                service, stop, channels, events=events, leadership_retry=leadership_retry
            )


async def _run_service(
    service: Service,
    stop: asyncio.Event,
    channels: list[str],
    *,
    events: PrometheusEvents,
    leadership_retry: float,
) -> None:
    settings, clock = service.settings, service.clock
    await take_back_dead_leases(service)
    telegram = await start_telegram(service) if settings.telegram else None
    smtp = smtp_sender(settings, telegram, clock)
    intake = imap_intake(service) if smtp is not None else None
    roles = [JOBS, *([TELEGRAM] if telegram else []), *([IMAP] if intake else [])]
    async with leadership_of(service, roles, retry=leadership_retry) as leadership:
        service.leadership = leadership
        everywhere: dict[Route, Sender] = (
            {Route.EMAIL: CountingSender(smtp, events)} if smtp is not None else {}
        )
        log.info("supportbot running: %s", ", ".join(channels))
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(leadership.run(stop))
                for worker in outbox_workers(service, everywhere):
                    tasks.create_task(worker.run(stop, poll=0.5))
                if telegram is not None:
                    hook = telegram.webhook_server()
                    if hook is not None:  # every replica takes updates; the leader handles them
                        tasks.create_task(hook.serve(stop))
                    for job in telegram_jobs(service, telegram, events):
                        tasks.create_task(while_leading(leadership, TELEGRAM, job, stop))
                if intake is not None:
                    imap = intake
                    tasks.create_task(while_leading(leadership, IMAP, imap.run, stop))
                for job in periodic_jobs(service, watching=telegram is not None):
                    tasks.create_task(while_leading(leadership, JOBS, job, stop))
                tasks.create_task(while_leading(leadership, JOBS, retention_job(service), stop))
                if settings.http_listen is not None:
                    host, port = settings.http_listen
                    probes = probes_of(service, telegram, intake, leadership.roles)
                    tasks.create_task(http_server.serve(make_app(probes, events), host, port, stop))
                found = settings.satisfaction
                if found is not None and service.desk.satisfaction is not None:
                    tasks.create_task(
                        serve_scores(
                            service.desk.satisfaction, found.listen_host, found.listen_port, stop
                        )
                    )
        finally:
            if smtp is not None:
                await smtp.close()
            if telegram is not None:
                await telegram.close()
    log.info("supportbot stopped")


def imap_intake(service: Service) -> ImapIntake | None:
    """The mailbox reader, when IMAP is set (it runs only on the replica that leads IMAP)."""
    settings, clock = service.settings, service.clock
    if settings.imap is None or not settings.support_address:
        return None
    return ImapIntake(
        settings.imap,
        service.desk,
        service.sessions,
        settings.support_address,
        clock=clock,
        on_health=health_notices(
            service.sessions, service.templates, clock=clock, wakeup=service.wakeups
        ),
        events=service.events,
    )


def telegram_jobs(
    service: Service, telegram: TelegramChannel, events: PrometheusEvents
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """Everything that talks to Telegram, run by the replica that leads TELEGRAM only: intake
    and placing tickets, the agents' notices, the messages to customers (one rate budget)."""
    jobs: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = [telegram.run]
    for route, sender in telegram.senders().items():  # a worker per route: see outbox_workers
        jobs.append(partial(_deliver, service, {route: CountingSender(sender, events)}))
    return jobs


async def _deliver(service: Service, senders: dict[Route, Sender], stop: asyncio.Event) -> None:
    await service.outbox_worker(senders).run(stop, poll=0.5)


@asynccontextmanager
async def leadership_of(
    service: Service, roles: list[str], *, retry: float = 1.0
) -> AsyncIterator[Solo | AdvisoryLeadership]:
    """SQLite: this process leads everything. PostgreSQL: advisory locks on a connection of its
    own (see supportbot.leadership)."""
    if db.is_sqlite(service.engine):
        yield Solo(roles)
        return
    engine = db.create_engine(service.settings.database_url, dedicated=KEEPALIVES)
    try:
        yield AdvisoryLeadership(engine, roles, retry=retry)
    finally:
        await asyncio.shield(engine.dispose())


def retention_job(service: Service) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """Hourly pruning of what is older than RETENTION_DAYS (`tickets/retention.py`).

    An elected job: with replicas, only the leader of "jobs" runs it.
    """
    return partial(
        prune_periodically,
        service.sessions,
        clock=service.clock,
        keep=service.settings.retention,
    )


def probes_of(
    service: Service,
    telegram: TelegramChannel | None,
    intake: ImapIntake | None,
    roles: Roles,
) -> Probes:
    """What `/readyz` and `/metrics` ask this process."""
    return Probes(
        database=partial(database_answers, service.sessions),
        vitals=lambda: read_vitals(service.sessions, service.policy, service.clock()),
        roles=roles,
        telegram=telegram.token_works if telegram is not None else None,
        imap_connected=(lambda: intake.connected) if intake is not None else None,
        telegram_cache_seconds=service.settings.health_cache_seconds,
    )


def outbox_workers(service: Service, senders: dict[Route, Sender]) -> list[OutboxWorker]:
    """The workers every replica runs: mail (and any route given), and billing writes.

    Agents' notices are paced by the group's budget and must not wait behind customer messages
    that are paced per chat (and vice versa); a slow billing service holds up neither. The
    Telegram routes get a worker each on the replica that leads TELEGRAM (`telegram_jobs`).
    """
    workers = [service.outbox_worker({route: sender}) for route, sender in senders.items()]
    if not service.billing.local:
        workers.append(service.outbox_worker({Route.BILLING: write_sender(service.billing.send)}))
    return workers


def periodic_jobs(
    service: Service, *, watching: bool
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """The desk's periodic tasks: overdue payouts, the SLA watch, SLA credits, plan refresh."""
    settings, clock = service.settings, service.clock
    jobs: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = [
        partial(_every, PAYOUT_CHECK_SECONDS, service.payouts.alert_overdue)
    ]
    if watching:
        watch = watch_from(service)
        jobs.append(partial(_every, watch.rules.interval_seconds, watch.sweep))
    # `/pending` reminders and closes, and AUTO_CLOSE_DAYS (issue 15, point 5).
    jobs.append(partial(_every, settings.sla.watch_interval_seconds, service.desk.pending.sweep))
    if settings.uptime is not None:  # automatic SLA credits, 1st to 10th, hourly
        credits = MonthlyCredits(
            service.sessions,
            service.templates,
            settings.uptime,
            notice_routes(settings),
            billing=service.billing,
            clock=clock,
            wakeup=service.wakeups,
        )
        jobs.append(credits.run)
    refresh = PlanRefresh(
        service.sessions,
        service.billing,
        service.templates,
        clock=clock,
        interval=settings.plan_refresh_seconds,
        wakeup=service.wakeups,
    )
    jobs.append(refresh.run)
    return jobs


async def take_back_dead_leases(service: Service) -> None:
    """On SQLite, where one service process is all there is, every outbox lease found at start
    was left by a process that died: its rows go out now, not when the lease runs out."""
    if db.is_sqlite(service.engine):
        freed = await take_back_leases(service.sessions)
        if freed:
            log.info("outbox: took back %d rows a stopped process had leased", freed)


def smtp_sender(
    settings: Settings, telegram: TelegramChannel | None, clock: Clock
) -> SmtpSender | None:
    """The SMTP sender, when SMTP is set: SMTP alone (no IMAP) still sends account link codes."""
    if settings.smtp is None or not settings.support_address:
        return None
    return SmtpSender(
        settings.smtp,
        settings.support_address,
        clock=clock,
        attachment_loader=telegram.download if telegram is not None else None,
    )


def watch_from(service: Service) -> SlaWatch:
    """The SLA watch, with the thresholds of the settings."""
    sla = service.settings.sla
    rules = WatchRules(
        escalate_after_hours=sla.escalate_after_hours,
        stale_claim_hours=sla.stale_claim_hours,
        interval_seconds=sla.watch_interval_seconds,
    )
    return SlaWatch(
        service.sessions,
        service.policy,
        service.templates,
        rules=rules,
        clock=service.clock,
        wakeup=service.wakeups,
    )


PAYOUT_CHECK_SECONDS = 600.0


async def _every(seconds: float, job: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Run a periodic job until `stop`; a failure is logged and tried again next time."""
    failed = f"periodic job {getattr(job, '__name__', job)} failed"
    await run_every(seconds, job, stop, log=log, failed=failed)


async def start_telegram(service: Service) -> TelegramChannel:
    """Build and start the Telegram channel from the service's settings."""
    assert service.settings.telegram is not None
    channel = TelegramChannel(
        service.settings.telegram,
        service.desk,
        service.sessions,
        service.policy,
        service.templates,
        service.clock,
        accounts=account_services(service),
        refunds=service.refunds,
        payouts=service.payouts,
        events=service.events,
    )
    await channel.start()
    return channel


def account_services(service: Service) -> AccountServices:
    """`/link` and `/balance`: codes are signed with the bot token and mailed by SMTP if set."""
    settings = service.settings
    assert settings.telegram is not None
    billing = service.billing
    mail_from = settings.support_address if settings.smtp is not None else None
    linker = Linker(
        service.sessions,
        billing,
        service.templates,
        secret=settings.telegram.token,
        support_address=mail_from,
        clock=service.clock,
        wakeup=service.wakeups,
    )
    lookups = BalanceLookups(service.sessions, billing, service.templates, clock=service.clock)
    claims = AccountClaims(
        service.sessions,
        linker,
        billing,
        service.templates,
        clock=service.clock,
        wakeup=service.wakeups,
    )
    return AccountServices(linker, lookups, service.templates, claims)


AVAILABLE_CHANNELS: frozenset[str] = frozenset({"telegram", "email"})
