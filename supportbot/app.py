"""The composition root: settings → database → core → workers and channels, run and shut down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from supportbot import db
from supportbot.settings import Settings
from supportbot.templates import Templates
from tickets.desk import Desk
from tickets.errors import SupportbotError
from tickets.model import Route
from tickets.outbox import OutboxWorker, Sender, Wakeup
from tickets.policy import SlaPolicy
from tickets.ports import Clock, utcnow

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
    wakeup: Wakeup
    clock: Clock

    def outbox_worker(self, senders: dict[Route, Sender]) -> OutboxWorker:
        return OutboxWorker(self.sessions, senders, self.desk, clock=self.clock, wakeup=self.wakeup)


@asynccontextmanager
async def build(settings: Settings, *, clock: Clock = utcnow) -> AsyncIterator[Service]:
    """Open the database (migrating SQLite), wire the core, and dispose of it all on exit."""
    async with db.open_engine(settings.database_url) as engine:
        await prepare_database(engine)
        sessions = db.session_factory(engine)
        policy = policy_from(settings)
        templates = Templates()
        wakeup = Wakeup()
        desk = Desk(sessions, policy, templates, clock=clock, wakeup=wakeup)
        yield Service(settings, engine, sessions, policy, templates, desk, wakeup, clock)


def missing_channels_message() -> str:
    return (
        "nothing to run: no channel is configured. Set TELEGRAM_TOKEN and AGENT_CHAT_ID for "
        "Telegram, or IMAP_HOST, IMAP_USER, IMAP_PASSWORD, SMTP_HOST and SUPPORT_ADDRESS for email "
        "(see .env.example)"
    )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run every configured channel and the outbox worker until `stop` is set."""
    channels = settings.channels()
    if not channels:
        raise NothingToRun(missing_channels_message())
    unavailable = [name for name in channels if name not in AVAILABLE_CHANNELS]
    if unavailable:
        raise SupportbotError(
            f"the {', '.join(unavailable)} channel is configured, but this version of supportbot "
            "does not include it yet"
        )
    async with build(settings) as service:  # pragma: no cover - reached once a channel exists
        worker = service.outbox_worker({})
        log.info("supportbot running: %s", ", ".join(channels))
        await worker.run(stop)


# Channel adapters register here as they are built (bot/ for Telegram, mail/ for email).
AVAILABLE_CHANNELS: frozenset[str] = frozenset()
