"""Satisfaction (issue 15, point 7): after a close, one ask for a score of 1 to 5.

* On with `CSAT_ENABLED` (off by default). A ticket is asked once, ever (one `satisfaction` row
  per ticket), and only when an agent's answer reached the customer: the score counts for the
  agent whose delivered answer was the last.
* Telegram: the ask carries five buttons, signed by the bot (`bot/satisfaction.py`). Email: five
  links `CSAT_BASE_URL/csat/N/SCORE/TOKEN`, each HMAC-signed here; the service's small HTTP
  endpoint (`supportbot/web.py`) shows a confirm button and records the score on its POST, so a
  mail scanner that fetches links gives no score.
* The first score counts; later ones (a second press, a second link) are refused politely.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tickets.customer_messages import answering
from tickets.customer_notices import queue_notice
from tickets.model import Channel, Direction
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Customer, Message, SatisfactionAsk, Ticket

SCORES = (1, 2, 3, 4, 5)


class Scored(StrEnum):
    """What became of a score."""

    RECORDED = "recorded"
    ALREADY = "already"  # the ticket's first score was given before
    NOT_ASKED = "not_asked"  # no ask for this ticket, or not this customer's


@dataclass(frozen=True)
class ScoreLinks:
    """Signs and checks the score links of satisfaction mails."""

    secret: str
    base_url: str

    def token(self, ticket: int, score: int) -> str:
        key = hashlib.sha256(b"supportbot satisfaction\0" + self.secret.encode()).digest()
        mac = hmac.new(key, f"csat:{ticket}:{score}".encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(self, ticket: int, score: int) -> str:
        return f"{self.base_url.rstrip('/')}/csat/{ticket}/{score}/{self.token(ticket, score)}"

    def check(self, ticket: int, score: int, token: str) -> bool:
        """Whether a link's token was made here for this ticket and score."""
        return score in SCORES and hmac.compare_digest(token, self.token(ticket, score))


class Satisfaction:
    """Asks for a score after a close, and records the first score given."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        links: ScoreLinks,
        *,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] | None = None,
        mail_domain: str = "supportbot.invalid",
    ) -> None:
        self._sessions = sessions
        self._templates = templates
        self.links = links
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)
        self._mail_domain = mail_domain

    async def ask(self, session: AsyncSession, ticket: Ticket, at: datetime) -> bool:
        """In the closing transaction: queue the ticket's one ask, if it has none yet and an
        agent's answer reached the customer. True when asked (the caller wakes the outbox once
        it has committed)."""
        if await session.get(SatisfactionAsk, ticket.id) is not None:
            return False
        agent_id = await session.scalar(
            select(Message.author_agent_id)
            .where(
                Message.ticket_id == ticket.id,
                Message.direction == Direction.OUT.value,
                Message.delivered_at.is_not(None),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )
        last_in = await answering(session, ticket.id)
        if agent_id is None or last_in is None or last_in.channel is None:
            return False
        session.add(
            SatisfactionAsk(
                ticket_id=ticket.id, agent_id=agent_id, channel=last_in.channel, asked_at=at
            )
        )
        await session.flush()
        links = [(score, self.links.url(ticket.id, score)) for score in SCORES]
        where = await queue_notice(
            session,
            self._templates,
            ticket.id,
            {"": "tickets/csat_ask", Channel.EMAIL.value: "tickets/csat_ask_mail"},
            at=at,
            mail_domain=self._mail_domain,
            context={"links": links},
            extra={"event": "csat", "csat": ticket.id},
        )
        return where is not None

    async def record(self, ticket: int, score: int, *, telegram_id: int | None = None) -> Scored:
        """The customer's score: the first one counts. From Telegram, only the ticket's own
        customer's press counts."""
        if score not in SCORES:
            return Scored.NOT_ASKED
        now = self._clock()
        async with self._sessions.begin() as session:
            asked = await session.get(SatisfactionAsk, ticket)
            if asked is None:
                return Scored.NOT_ASKED
            if telegram_id is not None:
                owner = await session.scalar(
                    select(Customer.telegram_id)
                    .join(Ticket, Ticket.customer_id == Customer.id)
                    .where(Ticket.id == ticket)
                )
                if owner != telegram_id:
                    return Scored.NOT_ASKED
            done = await session.execute(
                update(SatisfactionAsk)
                .where(SatisfactionAsk.ticket_id == ticket, SatisfactionAsk.score.is_(None))
                .values(score=score, answered_at=now)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                return Scored.ALREADY
        return Scored.RECORDED
