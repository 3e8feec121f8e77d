"""Balance lookups for agents (`/balance`, the card's Balance button) and linked customers.

Every lookup names who asked, what and for which ticket in the audit log; every refusal (no
account matched, an unknown address, a customer who has not linked) is audited too and changes
nothing else. The numbers come from the configured `Billing`; who the customer is comes from the
ledger's identity rules (`accounts.ledger.owner_of_customer`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.billing import AccountSummary, Billing, BillingUnavailable
from accounts.ledger import (
    Identity,
    address_account,
    normalise_email,
    owner_of_customer,
    tied_account,
)
from accounts.linking import is_address, linked_account
from accounts.money import cents
from accounts.refund_plans import Reading, eligibility_summary
from accounts.tables import Account, AccountLink, Payment
from tickets import audit
from tickets.errors import AgentNotFound, InvalidAction, NotFound, SupportbotError
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Agent, Customer, CustomerEmail, Message, Ticket

IDENTITY_LABELS = {
    Identity.LINKED: "linked by email code",
    Identity.AUTHENTICATED: "matched by an authenticated sender address",
    Identity.UNVERIFIED: "matched by sender address, NOT verified: check before any account action",
}
BY_ADDRESS = "looked up by address: the customer has not proven they own it"
TIED = "tied by an agent with /account, NOT verified until the code comes back"
PAYMENTS_SHOWN = 5


class NoAccount(NotFound):
    """No account answers to the ticket's customer or to the address asked for."""


@dataclass(frozen=True)
class Target:
    """What an agent's `/balance` asks about: a ticket's customer, or an address."""

    ticket: int | None
    email: str | None


def parse_target(args: str, context_ticket: int | None) -> Target:
    """`/balance`, `/balance 42`, `/balance #42` or `/balance ann@example.com`."""
    word = args.strip().split(" ", 1)[0] if args.strip() else ""
    if not word:
        if context_ticket is None:
            raise InvalidAction(
                "/balance needs a ticket or an address here, e.g. /balance 42 or "
                "/balance ann@example.com"
            )
        return Target(context_ticket, None)
    if word.removeprefix("#").isdigit():
        return Target(int(word.removeprefix("#")), None)
    if is_address(word):
        return Target(context_ticket, normalise_email(word))
    raise InvalidAction(f"{word!r} is neither a ticket number nor an email address")


def identity_columns() -> tuple[ScalarSelect[str], ScalarSelect[str], ScalarSelect[str]]:
    """Columns for a query over `Customer`: the account email linked by code, the one an agent
    tied with `/account` (no code back yet), and the one matched by the customer's address (the
    lowest account id wins)."""

    return (
        tied_account(Account.email, "code"),
        tied_account(Account.email, "agent"),
        address_account(Account.email),
    )


async def identity_notes(session: AsyncSession, customer_ids: Iterable[int]) -> dict[int, str]:
    """A line for the ticket card of each customer matched to an account: address, certainty."""
    wanted = sorted(set(customer_ids))
    if not wanted:
        return {}
    rows = await session.execute(
        select(Customer.id, *identity_columns()).where(Customer.id.in_(wanted))
    )
    return await identity_lines(session, ((row[0], row[1], row[2], row[3]) for row in rows))


async def identity_lines(
    session: AsyncSession, emails: Iterable[tuple[int, str | None, str | None, str | None]]
) -> dict[int, str]:
    """Card lines from `(customer, linked email, tied email, matched email)` (see
    `identity_columns`).

    The same rules as `owner_of_customer`: a code-proven link first, then an agent's tie (not
    verified), then the sender address with the verdict of the customer's latest mail, which
    costs one query, and only when some customer is matched by address.
    """
    found: dict[int, tuple[str, Identity | str]] = {}
    matched: dict[int, str] = {}
    for customer_id, linked_email, tied_email, matched_email in emails:
        if linked_email is not None:
            found[customer_id] = (linked_email, Identity.LINKED)
        elif tied_email is not None:
            found[customer_id] = (tied_email, TIED)
        elif matched_email is not None:
            matched[customer_id] = matched_email
    if matched:
        latest = (
            select(Ticket.customer_id, func.max(Message.id).label("message_id"))
            .join(Message, Message.ticket_id == Ticket.id)
            .where(
                Ticket.customer_id.in_(list(matched)),
                Message.direction == "in",
                Message.channel == "email",
            )
            .group_by(Ticket.customer_id)
            .subquery()
        )
        rows = await session.execute(
            select(latest.c.customer_id, Message.auth).join(
                Message, Message.id == latest.c.message_id
            )
        )
        verdicts: dict[int, str | None] = {customer: auth for customer, auth in rows}
        for customer_id, email in matched.items():
            sure = verdicts.get(customer_id) == "pass"
            found[customer_id] = (email, Identity.AUTHENTICATED if sure else Identity.UNVERIFIED)
    # A customer with no account gets no line: most Telegram customers, whose cards stay short.
    return {
        c: f"👤 {email} · {IDENTITY_LABELS[how] if isinstance(how, Identity) else how}"
        for c, (email, how) in found.items()
    }


def _payments(summary: AccountSummary) -> list[dict[str, Any]]:
    return [
        {
            "paid_at": p.paid_at,
            "amount": cents(p.amount_usd),
            "amount_usd": p.amount_usd,
            "crypto_amount": p.crypto_amount,
            "currency": p.currency,
            "chain": p.chain,
            "wallet": p.wallet,
            "tx_hash": p.tx_hash,
            "pro_upgrade": p.purpose == "pro_upgrade",
        }
        for p in summary.payments[:PAYMENTS_SHOWN]
    ]


class BalanceLookups:
    """Answers `/balance` for agents and for linked customers, auditing every answer."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        billing: Billing,
        templates: Renderer,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._billing = billing
        self._templates = templates
        self._clock = clock

    async def for_agent(self, agent_telegram_id: int, target: Target) -> str:
        """An agent's lookup: balance, plan, payments with wallets, spend, eligibility."""
        now = self._clock()
        async with self._sessions() as session:
            agent = await session.scalar(
                select(Agent).where(
                    Agent.telegram_id == agent_telegram_id, Agent.removed_at.is_(None)
                )
            )
            if agent is None:
                raise AgentNotFound(agent_telegram_id)
            ticket = await session.get(Ticket, target.ticket) if target.ticket else None
            email = target.email
            identity = BY_ADDRESS
            if email is None:
                problem: SupportbotError | None = None
                if ticket is None:
                    problem = NotFound(f"there is no ticket #{target.ticket}")
                else:
                    owner = await owner_of_customer(session, ticket.customer_id)
                    if owner is None:
                        problem = NoAccount(
                            f"#{ticket.id}: no account matches this customer (not linked, and "
                            "no account has their email address); try /balance EMAIL"
                        )
                    else:
                        email = owner.account.email
                        identity = IDENTITY_LABELS[owner.identity]
                if problem is not None:
                    await self._audit(agent, "refused:balance", ticket, now, reason=str(problem))
                    raise problem
        assert email is not None
        try:
            summary = await self._billing.lookup(email, now)
        except BillingUnavailable as error:
            await self._audit(
                agent, "refused:balance", ticket, now, reason=str(error)[:300], email=email
            )
            raise
        if summary is None:
            await self._audit(
                agent, "refused:balance", ticket, now, reason="unknown address", email=email
            )
            raise NoAccount(f"no account has the address {email}")
        await self._audit(
            agent, "balance_lookup", ticket, now, email=email, identity=identity.split(":")[0]
        )
        eligibility = await self._eligibility(summary, now)
        return self._templates.render(
            "agents/balance",
            ticket=ticket.id if ticket else None,
            email=summary.email,
            identity=identity,
            plan=summary.plan,
            pro_since=summary.pro_since,
            balance=cents(summary.balance),
            month_spend=cents(summary.month_spend),
            payments=_payments(summary),
            eligibility=eligibility,
            as_of=summary.as_of,
            local=self._billing.local,
        )

    async def _eligibility(self, summary: AccountSummary, now: datetime) -> str | None:
        """The refund eligibility lines of a lookup; None when the answer names no account the
        desk holds (a custom adapter that does not say)."""
        if summary.account_id is None:
            return None
        async with self._sessions.begin() as session:
            account = await session.get(Account, summary.account_id)
            if account is None:
                return None
            return await eligibility_summary(
                session, account, Reading(summary), now, self._templates, local=self._billing.local
            )

    async def _audit(
        self, agent: Agent, action: str, ticket: Ticket | None, now: datetime, **details: Any
    ) -> None:
        async with self._sessions.begin() as session:
            audit.record(
                session,
                at=now,
                action=action,
                agent=agent,
                ticket_id=ticket.id if ticket else None,
                **details,
            )

    async def for_customer(self, telegram_id: int, locale: str | None = None) -> str:
        """A linked customer's own balance, plan and recent payments; others are told to link."""
        now = self._clock()
        async with self._sessions() as session:
            account = await linked_account(session, telegram_id)
        problem = None
        try:
            summary = await self._billing.lookup(account.email, now) if account else None
        except BillingUnavailable as error:
            summary, problem = None, str(error)
        async with self._sessions.begin() as session:
            audit.record(
                session,
                at=now,
                action="customer_balance" if summary else "refused:balance",
                actor=f"telegram:{telegram_id}",
                email=account.email if account else None,
                reason=problem
                or (None if summary else "not linked" if account is None else "unknown"),
            )
        if problem is not None:
            return self._templates.render("telegram/balance_unavailable", locale=locale)
        if summary is None:
            return self._templates.render(
                "telegram/balance_unlinked", locale=locale, linked=account is not None
            )
        return self._templates.render(
            "telegram/balance",
            locale=locale,
            email=summary.email,
            plan=summary.plan,
            pro_since=summary.pro_since,
            balance=summary.balance,
            month_spend=summary.month_spend,
            payments=[{**p, "amount": p["amount_usd"]} for p in _payments(summary)],
            as_of=summary.as_of,
        )


async def customers_paying(sessions: async_sessionmaker[AsyncSession], tx_hash: str) -> list[int]:
    """The customers of the account a payment with this hash came into: those linked to it and
    those writing from its address (what `/search TX` looks tickets up by)."""
    async with sessions() as session:
        accounts = select(Payment.account_id).where(func.lower(Payment.tx_hash) == tx_hash.lower())
        linked = select(AccountLink.customer_id).where(AccountLink.account_id.in_(accounts))
        by_address = (
            select(CustomerEmail.customer_id)
            .join(Account, Account.email == CustomerEmail.address)
            .where(Account.id.in_(accounts))
        )
        found = await session.scalars(linked.union(by_address))
        return sorted({int(c) for c in found.all()})
