"""Linking a Telegram user to an account: a one-time code mailed to the account's address.

`/link you@example.com` mails a 6-digit code through the outbox; `/link 123456` proves the
customer read that mailbox and links them. A code lives 15 minutes and allows 5 attempts; a new
request replaces the previous code. Requests are limited to 3 an hour per Telegram user and 3 an
hour per address, by rate windows that hold when requests race (`tickets.rate_limits`). Only an
HMAC of the code is stored, keyed by a secret of the deployment and bound to the customer and
address it was made for.

An address with no account gets exactly the answer a real one gets and a request row without a
code (so it counts against the same limits), but no mail: nobody can learn from the bot whether
an address has an account.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.billing import Billing
from accounts.ledger import account_by_email, normalise_email
from accounts.plans import sync_plans
from accounts.tables import Account, AccountLink, LinkCode
from tickets import audit, rate_limits
from tickets.customer_lookup import locale_of
from tickets.model import OutboxKind, Route
from tickets.payloads import LinkCodePayload, enqueue
from tickets.ports import Clock, Renderer, utcnow
from tickets.rate_limits import RateRule
from tickets.tables import Customer

CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5
REQUEST_WINDOW = timedelta(hours=1)
REQUESTS_PER_USER = RateRule("link_per_user", 3, REQUEST_WINDOW)
REQUESTS_PER_ADDRESS = RateRule("link_per_address", 3, REQUEST_WINDOW)
_CODE = re.compile(r"\d{6}")
_ADDRESS = re.compile(r"[^@\s<>\"',;]{1,64}@[^@\s<>\"',;]{1,255}\.[^@\s<>\"',;]{1,63}")


class LinkResult(StrEnum):
    """What became of a `/link` request or code."""

    SENT = "sent"  # also the answer for an address without an account
    NOT_AN_ADDRESS = "not_an_address"
    TOO_MANY_REQUESTS = "too_many_requests"
    NO_MAIL = "no_mail"  # this deployment cannot send email
    LINKED = "linked"
    WRONG_CODE = "wrong_code"
    EXPIRED = "expired"
    NO_ATTEMPTS_LEFT = "no_attempts_left"
    NO_CODE = "no_code"  # nothing was requested (or the code was used already)


@dataclass(frozen=True)
class LinkOutcome:
    result: LinkResult
    email: str | None = None
    attempts_left: int = 0
    retry_at: datetime | None = None


# -- pure policy --------------------------------------------------------------------------------


def is_code(text: str) -> bool:
    """Whether text is a link code (six digits) rather than an address."""
    return bool(_CODE.fullmatch(text.strip()))


def is_address(text: str) -> bool:
    """Whether text looks like an email address an account could have."""
    return bool(_ADDRESS.fullmatch(text.strip())) and len(text.strip()) <= 320


def new_code() -> str:
    """A uniformly random 6-digit code."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(key: bytes, customer_id: int, email: str, code: str) -> str:
    """The stored form of a code: an HMAC bound to the customer and the address."""
    message = f"{customer_id}\0{email}\0{code}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def secret_key(secret: str) -> bytes:
    """The HMAC key of link codes, derived from the deployment's secret."""
    return hashlib.sha256(b"supportbot link codes\0" + secret.encode()).digest()


@dataclass(frozen=True)
class CodeState:
    """A stored code as the check needs it."""

    expires_at: datetime
    attempts: int
    code_hash: str


def judge(state: CodeState, given_hash: str, now: datetime) -> LinkResult:
    """Whether a code is accepted: expiry and spent attempts first, then the comparison."""
    if now >= state.expires_at:
        return LinkResult.EXPIRED
    if state.attempts >= MAX_ATTEMPTS:
        return LinkResult.NO_ATTEMPTS_LEFT
    if state.code_hash and hmac.compare_digest(state.code_hash, given_hash):
        return LinkResult.LINKED
    return LinkResult.WRONG_CODE


# -- the flow -----------------------------------------------------------------------------------


class Linker:
    """Runs `/link`: code requests (mailed through the outbox) and code checks, each audited."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        billing: Billing,
        templates: Renderer,
        *,
        secret: str,
        support_address: str | None,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] | None = None,
        code_maker: Callable[[], str] = new_code,
    ) -> None:
        self._sessions = sessions
        self._billing = billing
        self._templates = templates
        self._key = secret_key(secret)
        self._support_address = support_address
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)
        self._new_code = code_maker

    @property
    def can_mail(self) -> bool:
        """Codes go by email: without a support address and SMTP there is no linking."""
        return self._support_address is not None

    async def request(self, telegram_id: int, name: str, text: str) -> LinkOutcome:
        """Mail a code to the address if it has an account; the answer is the same either way."""
        now = self._clock()
        email = normalise_email(text)
        actor = f"telegram:{telegram_id}"
        if not is_address(email):
            await self._refused(actor, now, "not an email address", None)
            return LinkOutcome(LinkResult.NOT_AN_ADDRESS)
        if not self.can_mail:
            await self._refused(actor, now, "email is not configured", email)
            return LinkOutcome(LinkResult.NO_MAIL, email)
        known = await self._billing.lookup(email, now) is not None
        async with self._sessions.begin() as session:
            customer_id = await ensure_customer(session, telegram_id, name, now)
            limits: list[tuple[RateRule, str | int]] = [
                (REQUESTS_PER_USER, telegram_id),
                (REQUESTS_PER_ADDRESS, email),
            ]
            verdict = await rate_limits.take(await session.connection(), limits, now)
            if not verdict.allowed:
                audit.record(
                    session,
                    at=now,
                    action="refused:link",
                    actor=actor,
                    reason="too many code requests",
                    email=email,
                )
                return LinkOutcome(LinkResult.TOO_MANY_REQUESTS, email, retry_at=verdict.retry_at)
            code = await self._replace_code(session, customer_id, email, now, hashed=known)
            if known:
                await self._mail_code(session, customer_id, email, code, now)
            audit.record(
                session, at=now, action="link_requested", actor=actor, email=email, sent=known
            )
        if known:
            self._wakeup()
        return LinkOutcome(LinkResult.SENT, email)

    async def _mail_code(
        self,
        session: AsyncSession,
        customer_id: int,
        email: str,
        code: str,
        now: datetime,
        ticket: int | None = None,
    ) -> None:
        assert self._support_address is not None
        domain = self._support_address.rpartition("@")[2]
        locale = await locale_of(await session.connection(), customer_id)
        text = self._templates.render(
            "link_code",
            locale=locale,
            code=code,
            minutes=int(CODE_TTL.total_seconds() // 60),
            ticket=ticket,
        )
        payload: LinkCodePayload = {
            "text": text,
            "subject_line": self._templates.render("link_code_subject", locale=locale),
            "message_id": f"<link-{uuid.uuid4().hex}@{domain}>",
            "automatic": True,
            "locale": locale,
        }
        enqueue(
            session,
            route=Route.EMAIL,
            recipient=email,
            kind=OutboxKind.LINK_CODE,
            payload=payload,
            at=now,
        )

    async def confirm(self, telegram_id: int, name: str, code: str) -> LinkOutcome:
        """Check a code the customer sent; the right one links them to the account."""
        now = self._clock()
        actor = f"telegram:{telegram_id}"
        pending = await self._pending_email(telegram_id)
        plan = None
        if pending is not None:
            async with self._sessions() as session:
                local = await account_by_email(session, pending)
            if local is None or not self._billing.local:  # the billing system's current word
                summary = await self._billing.lookup(pending, now)
                plan = summary.plan if summary is not None else None
        async with self._sessions.begin() as session:
            customer_id = await ensure_customer(session, telegram_id, name, now)
            row = await pending_code(session, customer_id)
            if row is None:
                verdict = LinkResult.NO_CODE
            else:
                given = code_hash(self._key, customer_id, row.email, code.strip())
                verdict = judge(CodeState(row.expires_at, row.attempts, row.code_hash), given, now)
            if verdict is LinkResult.WRONG_CODE:
                assert row is not None
                row.attempts += 1
                left = MAX_ATTEMPTS - row.attempts
                audit.record(
                    session,
                    at=now,
                    action="refused:link",
                    actor=actor,
                    reason="wrong code",
                    email=row.email,
                    attempts_left=left,
                )
                return LinkOutcome(verdict, row.email, attempts_left=left)
            if verdict is not LinkResult.LINKED:
                audit.record(
                    session,
                    at=now,
                    action="refused:link",
                    actor=actor,
                    reason=verdict.value,
                    email=row.email if row else None,
                )
                return LinkOutcome(verdict, row.email if row else None)
            assert row is not None
            row.used_at = now
            account_id = await account_for(session, row.email, plan, now)
            await link(session, customer_id, account_id, now)
            audit.record(
                session, at=now, action="link", actor=actor, email=row.email, account_id=account_id
            )
            moved = await sync_plans(
                session,
                self._templates,
                at=now,
                reason=f"linked to {row.email}",
                customers=[customer_id],
                actor=actor,
            )
        if moved:
            self._wakeup()
        return LinkOutcome(LinkResult.LINKED, row.email)

    async def _pending_email(self, telegram_id: int) -> str | None:
        async with self._sessions() as session:
            return await session.scalar(
                select(LinkCode.email)
                .join(Customer, Customer.id == LinkCode.customer_id)
                .where(Customer.telegram_id == telegram_id, LinkCode.used_at.is_(None))
                .order_by(LinkCode.id.desc())
                .limit(1)
            )

    async def _refused(self, actor: str, now: datetime, reason: str, email: str | None) -> None:
        async with self._sessions.begin() as session:
            audit.record(
                session, at=now, action="refused:link", actor=actor, reason=reason, email=email
            )

    # -- for an agent's `/account N EMAIL` (accounts.account_claims) ------------------------

    async def issue_code(
        self, session: AsyncSession, customer_id: int, email: str, now: datetime, ticket: int
    ) -> str | datetime:
        """A new code for this customer and address, mailed there in this transaction (it
        replaces their earlier one); or when the request limits free up again."""
        verdict = await rate_limits.take(
            await session.connection(), [(REQUESTS_PER_ADDRESS, email)], now
        )
        if not verdict.allowed:
            assert verdict.retry_at is not None
            return verdict.retry_at
        code = await self._replace_code(session, customer_id, email, now, hashed=True)
        await self._mail_code(session, customer_id, email, code, now, ticket)
        return code

    async def _replace_code(
        self, session: AsyncSession, customer_id: int, email: str, now: datetime, *, hashed: bool
    ) -> str:
        """A new code row for the customer (its HMAC only when `hashed`); any earlier one ends."""
        await session.execute(
            update(LinkCode)
            .where(
                LinkCode.customer_id == customer_id,
                LinkCode.used_at.is_(None),
                LinkCode.expires_at > now,
            )
            .values(expires_at=now)
        )
        code = self._new_code()
        session.add(
            LinkCode(
                customer_id=customer_id,
                email=email,
                code_hash=code_hash(self._key, customer_id, email, code) if hashed else "",
                attempts=0,
                created_at=now,
                expires_at=now + CODE_TTL,
            )
        )
        return code

    def code_hash_of(self, customer_id: int, email: str, code: str) -> str:
        """How a code given back for this customer and address is stored."""
        return code_hash(self._key, customer_id, email, code.strip())


async def pending_code(session: AsyncSession, customer_id: int) -> LinkCode | None:
    """The customer's latest unused code row, locked: the one a code given back is checked by."""
    found: LinkCode | None = (
        await session.scalars(
            select(LinkCode)
            .where(LinkCode.customer_id == customer_id, LinkCode.used_at.is_(None))
            .order_by(LinkCode.id.desc())
            .limit(1)
            .with_for_update()
        )
    ).first()
    return found


async def linked_account(session: AsyncSession, telegram_id: int) -> Account | None:
    """The account a Telegram user proved they own, if any."""
    return await session.scalar(
        select(Account)
        .join(AccountLink, AccountLink.account_id == Account.id)
        .join(Customer, Customer.id == AccountLink.customer_id)
        .where(Customer.telegram_id == telegram_id)
    )


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def ensure_customer(session: AsyncSession, telegram_id: int, name: str, now: datetime) -> int:
    """The ticket-core customer of a Telegram user, made if they never wrote before."""
    await session.execute(
        _insert(session)(Customer)
        .values(telegram_id=telegram_id, name=name[:200], plan="basic", created_at=now)
        .on_conflict_do_nothing()
    )
    found = await session.scalar(select(Customer.id).where(Customer.telegram_id == telegram_id))
    assert found is not None
    return int(found)


async def account_for(session: AsyncSession, email: str, plan: str | None, now: datetime) -> int:
    """The ledger account of an address; made (as the billing system reports it) if missing."""
    await session.execute(
        _insert(session)(Account)
        .values(email=email, plan=plan or "basic", created_at=now, updated_at=now)
        .on_conflict_do_nothing()
    )
    found = await session.scalar(select(Account.id).where(Account.email == email))
    assert found is not None
    return int(found)


async def link(
    session: AsyncSession, customer_id: int, account_id: int, now: datetime, method: str = "code"
) -> None:
    """Tie a customer to an account (replacing an earlier tie): proven by `code`, or by an
    `agent` until the code comes back."""
    await session.execute(
        _insert(session)(AccountLink)
        .values(customer_id=customer_id, account_id=account_id, method=method, linked_at=now)
        .on_conflict_do_update(
            index_elements=["customer_id"],
            set_={"account_id": account_id, "method": method, "linked_at": now},
        )
    )
