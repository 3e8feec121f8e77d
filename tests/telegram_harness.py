"""The whole service running against the local Bot API server, as the tests drive it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import select

from bot.store import AgentPost
from sandbox.service import local_settings, serving
from sandbox.telegram import LocalBotApi, RateLimits, SentMessage, SimChat, SimUser
from supportbot.settings import Settings
from tests.conftest import Database
from tickets.agents import add_agent
from tickets.model import Role
from tickets.ports import utcnow
from tickets.tables import Customer, Ticket

TOKEN = "123456:LOCAL-TEST-TOKEN-abcdefghijkl"
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class Desk:
    """A running desk: the Telegram server, the agents' group, two agents and the service."""

    server: LocalBotApi
    group: SimChat
    agent: SimUser
    admin: SimUser
    stranger: SimUser
    settings: Settings
    database: Database

    def group_texts(self, thread_id: int | None = None) -> list[str]:
        return [m.text or "" for m in self.server.sent_to(self.group, thread_id)]

    async def customer_opens(self, name: str, text: str) -> tuple[SimUser, Ticket]:
        """A new customer writes and gets their receipt; returns them and their ticket."""
        user = self.server.add_user(name)
        await self.server.user_sends(user, text=text)
        await self.wait_customer(user, "ticket number")
        async with self.database.sessions() as session:
            ticket = (
                await session.scalars(
                    select(Ticket)
                    .join(Customer, Customer.id == Ticket.customer_id)
                    .where(Customer.telegram_id == user.id)
                )
            ).one()
        return user, ticket

    async def wait_group(self, needle: str, *, within: float = 10) -> SentMessage:
        return await self._wait_text(self.group.id, needle, within)

    async def wait_customer(self, user: SimUser, needle: str, *, within: float = 10) -> SentMessage:
        return await self._wait_text(user.id, needle, within)

    async def _wait_text(self, chat: int, needle: str, within: float) -> SentMessage:
        def found() -> SentMessage | None:
            for message in self.server.sent_to(chat):
                if needle in (message.text or ""):
                    return message
            return None

        try:
            return await self.server.wait_for(found, within)
        except TimeoutError:
            seen = [m.text for m in self.server.sent_to(chat)]
            raise AssertionError(f"no {needle!r} within {within}s in chat {chat}: {seen}") from None

    async def card_of(self, ticket: int) -> SentMessage:
        """The card of a ticket, once the bot has posted it and recorded where."""
        for _ in range(200):
            async with self.database.sessions() as session:
                message_id = await session.scalar(
                    select(AgentPost.message_id).where(
                        AgentPost.ticket_id == ticket, AgentPost.kind == "card"
                    )
                )
            if message_id is not None:
                return next(
                    m for m in self.server.sent_to(self.group) if m.message_id == message_id
                )
            await asyncio.sleep(0.05)
        raise AssertionError(f"#{ticket} got no card")

    async def topic_of(self, ticket: int) -> int:
        """The forum topic of a ticket, once the bot has created it and recorded where.

        Waiting for the record (not just for the topic) matters: an agent writing into a topic
        the bot has not recorded yet would be taken for agents chatting among themselves.
        """
        for _ in range(200):
            async with self.database.sessions() as session:
                thread = await session.scalar(
                    select(AgentPost.thread_id).where(
                        AgentPost.ticket_id == ticket, AgentPost.kind == "topic"
                    )
                )
            if thread is not None:
                assert any(t.thread_id == thread for t in self.server.topics(self.group))
                return int(thread)
            await asyncio.sleep(0.05)
        raise AssertionError(f"#{ticket} got no topic: {self.server.topics(self.group)}")


@asynccontextmanager
async def running_desk(
    database: Database,
    *,
    forum: bool = True,
    limits: RateLimits | None = None,
    extra: dict[str, str] | None = None,
    serve: bool = True,
) -> AsyncIterator[Desk]:
    """Start the local Bot API server and the real service on `database`; stop both after.

    With `serve=False` the service is left to the test, to start (and restart) with
    `serving(desk.settings, desk.server)`.
    """
    server = LocalBotApi(TOKEN, bot_username="supportbot_test", limits=limits)
    await server.start()
    group = server.add_group("Support agents", forum=forum)
    agent = server.add_user("Sam", username="sam")
    admin = server.add_user("Ada", username="ada")
    stranger = server.add_user("Mallory")
    for person in (agent, admin, stranger):
        await server.add_member(group, person)
    async with database.sessions.begin() as session:
        await add_agent(session, agent.id, Role.AGENT, "Sam", at=utcnow(), actor="test")
        await add_agent(session, admin.id, Role.ADMIN, "Ada", at=utcnow(), actor="test")
    settings = local_settings(server, group, database.url, extra)
    desk = Desk(server, group, agent, admin, stranger, settings, database)
    try:
        if serve:
            async with serving(settings, server):
                yield desk
        else:
            yield desk
    finally:
        await server.stop()
