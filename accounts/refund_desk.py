"""Refunds as agents run them: the panel, confirmation, admin approval and execution.

The account is read through the Billing port before each step's transaction; a confirmation or
an approval acts only on data younger than `BILLING_MAX_AGE` (a remote billing system is read
again every time; the built-in ledger is as fresh as its last import, and is read again inside
the transaction, under the account's lock). Execution is one transaction: the refund row
(unique `key`, derived from the plan), one payout per payment (unique `payment_id`), the
refund debit and the Pro downgrade written back through the port (applied to the ledger, or
queued in the outbox for a remote billing system, with the desk's idempotency key), the plan
change of the account's customers and open tickets, the customer's notice and the audit entry.
A second confirmation of the same plan finds the first refund; a plan that changed since the
panel was shown is refused with the new panel. Every refusal is audited and changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.billing import Billing, BillingWrite, PayoutLine, WriteKind
from accounts.ledger import Identity, Owner, owner_of_customer
from accounts.money import cents
from accounts.notices import notify_customer
from accounts.plans import sync_plans
from accounts.refund_plans import (
    DEFAULT_MAX_AGE,
    Reading,
    RefundRefused,
    eligibility_summary,
    plan_context,
    plan_of,
    read_account,
    stale,
    stale_refusal,
)
from accounts.refund_rules import RefundPlan, RefundScope
from accounts.tables import Account, Payment, Payout, Refund
from tickets import audit
from tickets.agents import active_agent
from tickets.errors import NotAllowed, NotFound, SupportbotError
from tickets.model import Plan, Role
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Agent, CustomerEmail, Ticket

log = logging.getLogger(__name__)

DEFAULT_APPROVAL_ABOVE = Decimal(100)
_FINGERPRINT = re.compile(r"[0-9a-f]{12}")
CHOICES = (RefundScope.ALL, RefundScope.UPGRADE, RefundScope.BALANCE)


class RefundStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    EXECUTED = "executed"
    REFUSED = "refused"


class PlanChanged(RefundRefused):
    """What is refundable changed since the panel was shown; `panel` is the new one."""

    def __init__(self, message: str, panel: Panel | None) -> None:
        super().__init__(message)
        self.panel = panel


@dataclass(frozen=True)
class Panel:
    """What an agent sees before confirming: the plan, the choices, what confirming needs."""

    ticket: int
    plan: RefundPlan  # everything eligible
    identity: Identity
    verified: bool  # the agent vouched for an unverified identity (`/refund N verified`)
    needs_approval: bool
    can_confirm: bool
    text: str
    options: tuple[RefundPlan, ...] = ()  # what the Confirm buttons offer, distinct, non-zero


@dataclass(frozen=True)
class RefundResult:
    """What became of a confirmation or an approval."""

    refund_id: int
    ticket: int | None
    status: RefundStatus
    total: Decimal
    repeated: bool  # the refund existed already (double tap, retry, second agent)
    text: str


@dataclass(frozen=True)
class _Who:
    """The agent and ticket of a refund action, and the account the ticket's customer owns."""

    agent: Agent
    ticket: Ticket
    owner: Owner


class RefundDesk:
    """The refund operations agents trigger, each one transaction, checked and audited."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        templates: Renderer,
        *,
        billing: Billing | None = None,
        clock: Clock = utcnow,
        approval_above: Decimal = DEFAULT_APPROVAL_ABOVE,
        max_age: timedelta = DEFAULT_MAX_AGE,
        mail_domain: str = "supportbot.invalid",
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        if billing is None:
            from accounts.ledger_billing import LedgerBilling  # noqa: PLC0415 - the default

            billing = LedgerBilling(sessions)
        self.sessions = sessions
        self.billing = billing
        self._templates = templates
        self._clock = clock
        self.approval_above = approval_above
        self.max_age = max_age
        self._mail_domain = mail_domain
        self._wakeup = wakeup or (lambda: None)

    # -- reading ------------------------------------------------------------------------

    async def _who(self, session: AsyncSession, telegram_id: int, number: int) -> _Who:
        agent = await _agent(session, telegram_id)
        ticket, owner = await _ticket_owner(session, number)
        return _Who(agent, ticket, owner)

    async def _email_of(self, telegram_id: int, number: int) -> str:
        """Check the agent and the ticket before anyone asks the billing system anything."""
        async with self.sessions() as session:
            return (await self._who(session, telegram_id, number)).owner.account.email

    async def _reading(
        self, session: AsyncSession, email: str, earlier: Reading | None, scope: RefundScope
    ) -> Reading:
        """The ledger is read again inside the transaction (under the account's lock); a
        remote billing system's answer was read just before it began."""
        if self.billing.local or earlier is None:
            return await read_account(self.billing, email, self._clock(), scope, session=session)
        return earlier

    async def eligibility(self, account: Account) -> str | None:
        """What the account could have refunded now, in a few lines; None if it cannot be read."""
        try:
            reading = await read_account(self.billing, account.email, self._clock())
        except RefundRefused as error:
            log.warning("refund eligibility of %s: %s", account.email, error)
            return None
        async with self.sessions.begin() as session:
            local = await session.get(Account, account.id)
            assert local is not None
            return await eligibility_summary(
                session, local, reading, self._clock(), self._templates, local=self.billing.local
            )

    # -- the panel ----------------------------------------------------------------------

    async def panel(self, number: int, telegram_id: int, *, verified: bool = False) -> Panel:
        """Show what a refund of the ticket's account would pay back, and why."""
        async with self._refusals(telegram_id, "refund_panel", number):
            email = await self._email_of(telegram_id, number)
            reading = None if self.billing.local else await self._read(email)
            async with self.sessions.begin() as session:
                who = await self._who(session, telegram_id, number)
                reading = await self._reading(session, email, reading, RefundScope.ALL)
                panel = await self._panel(session, who, reading, verified)
                audit.record(
                    session,
                    at=panel.plan.at,
                    action="refund_panel",
                    agent=who.agent,
                    ticket_id=who.ticket.id,
                    account=who.owner.account.email,
                    identity=who.owner.identity.value,
                    total=str(panel.plan.total),
                    key=panel.plan.key,
                    as_of=panel.plan.as_of.isoformat() if panel.plan.as_of else None,
                )
            return panel

    async def _read(self, email: str, scope: RefundScope = RefundScope.ALL) -> Reading:
        return await read_account(self.billing, email, self._clock(), scope)

    async def _panel(
        self, session: AsyncSession, who: _Who, reading: Reading, verified: bool
    ) -> Panel:
        now = self._clock()
        account = who.owner.account
        plans = [
            await plan_of(session, account, reading, now, scope, local=self.billing.local)
            for scope in CHOICES
        ]
        plan = plans[0]
        options: list[RefundPlan] = []
        for option in plans:
            if option.total > 0 and all(o.key != option.key for o in options):
                options.append(option)
        unverified = who.owner.identity is Identity.UNVERIFIED
        fresh = not stale(plan, now, self.max_age)
        needs_approval = plan.total > self.approval_above
        can_confirm = bool(options) and fresh and (verified or not unverified)
        text = self._templates.render(
            "agents/refund_panel",
            ticket=who.ticket.id,
            identity=who.owner.identity.value,
            unverified=unverified,
            verified=verified,
            needs_approval=needs_approval,
            approval_above=cents(self.approval_above),
            can_confirm=can_confirm,
            fresh=fresh,
            stale_line=None
            if fresh
            else stale_refusal(plan, now, self.max_age, self.billing.local),
            **plan_context(plan),
        )
        return Panel(
            who.ticket.id,
            plan,
            who.owner.identity,
            verified,
            needs_approval,
            can_confirm,
            text,
            tuple(options) if can_confirm else (),
        )

    # -- confirming ---------------------------------------------------------------------

    async def confirm(
        self,
        number: int,
        telegram_id: int,
        fingerprint: str,
        *,
        verified: bool = False,
        scope: RefundScope = RefundScope.ALL,
    ) -> RefundResult:
        """Confirm the plan the agent saw: execute it, or hold it for an admin's approval."""
        tried: dict[str, str] = {}
        async with self._refusals(telegram_id, "refund_confirm", number):
            if not _FINGERPRINT.fullmatch(fingerprint) or scope is RefundScope.FULL:
                raise RefundRefused("that confirmation does not name a refund plan")
            email = await self._email_of(telegram_id, number)
            reading = None if self.billing.local else await self._read(email, scope)
            try:
                return await self._confirm(
                    number, telegram_id, fingerprint, verified, scope, reading, tried
                )
            except IntegrityError:
                # Another transaction inserted the same refund or a payout of the same payment
                # first (only possible where the account lock is not honoured).
                return await self._existing(tried.get("key"), number)

    async def _confirm(
        self,
        number: int,
        telegram_id: int,
        fingerprint: str,
        verified: bool,
        scope: RefundScope,
        earlier: Reading | None,
        tried: dict[str, str],
    ) -> RefundResult:
        async with self.sessions.begin() as session:
            who = await self._who(session, telegram_id, number)
            account = await _lock_account(session, who.owner.account.id)
            reading = await self._reading(session, account.email, earlier, scope)
            now = self._clock()
            plan = await plan_of(session, account, reading, now, scope, local=self.billing.local)
            tried["key"] = plan.key
            done = await session.scalar(
                select(Refund).where(
                    Refund.account_id == account.id,
                    Refund.key.startswith(f"refund:{account.id}:{fingerprint}", autoescape=True),
                    Refund.status != RefundStatus.REFUSED.value,
                )
            )
            if done is not None:  # a double tap, a retry, a second agent: the same refund
                return self._result(done, repeated=True)
            if stale(plan, now, self.max_age):
                raise RefundRefused(stale_refusal(plan, now, self.max_age, self.billing.local))
            if plan.fingerprint != fingerprint:
                panel = await self._panel(session, who, reading, verified)
                raise PlanChanged(
                    "what is refundable changed since the panel was shown; nothing was "
                    "refunded. Check the new panel.",
                    panel,
                )
            if plan.total <= 0:
                raise RefundRefused(f"nothing is refundable for {account.email} now")
            if who.owner.identity is Identity.UNVERIFIED and not verified:
                raise RefundRefused(
                    "the customer's identity is not verified: verify it, then use "
                    f"/refund {who.ticket.id} verified"
                )
            needs_approval = plan.total > self.approval_above
            refund = await self._new_refund(session, plan, who, needs_approval, verified, None)
            if not needs_approval:
                await self._execute(session, refund, plan, account, who.agent, now)
            result = self._result(refund, repeated=False)
        self._wakeup()
        return result

    async def _new_refund(
        self,
        session: AsyncSession,
        plan: RefundPlan,
        who: _Who,
        needs_approval: bool,
        verified: bool,
        reason: str | None,
    ) -> Refund:
        refund = Refund(
            account_id=who.owner.account.id,
            ticket_id=who.ticket.id,
            key=plan.key,
            status=RefundStatus.AWAITING_APPROVAL.value,
            scope=plan.scope.value,
            reason=reason,
            total=plan.total,
            includes_pro_upgrade=plan.includes_upgrade,
            requested_by=who.agent.id,
            created_at=plan.at,
        )
        session.add(refund)
        await session.flush()
        audit.record(
            session,
            at=plan.at,
            action="refund_confirm",
            agent=who.agent,
            ticket_id=who.ticket.id,
            refund_id=refund.id,
            account=who.owner.account.email,
            scope=plan.scope.value,
            total=str(plan.total),
            identity=who.owner.identity.value,
            vouched=verified,
            needs_approval=needs_approval,
            reason=reason,
            as_of=plan.as_of.isoformat() if plan.as_of else None,
        )
        return refund

    # -- an admin's full refund outside the window ----------------------------------------

    async def full(
        self, number: int, telegram_id: int, reason: str, *, verified: bool = False
    ) -> RefundResult:
        """An admin's refund of the whole remaining balance outside the 7-day window; held for a
        second admin, with the reason in the audit log."""
        reason = " ".join(reason.split())[:500]
        async with self._refusals(telegram_id, "refund_full", number):
            if len(reason) < 3:
                raise RefundRefused(
                    "a full refund needs a reason: /refund N full [verified] REASON"
                )
            email = await self._email_of(telegram_id, number)
            reading = None if self.billing.local else await self._read(email, RefundScope.FULL)
            async with self.sessions.begin() as session:
                who = await self._who(session, telegram_id, number)
                if who.agent.role != Role.ADMIN.value:
                    raise NotAllowed("only an admin can refund outside the 7-day window")
                account = await _lock_account(session, who.owner.account.id)
                reading = await self._reading(session, email, reading, RefundScope.FULL)
                now = self._clock()
                plan = await plan_of(
                    session, account, reading, now, RefundScope.FULL, local=self.billing.local
                )
                if stale(plan, now, self.max_age):
                    raise RefundRefused(stale_refusal(plan, now, self.max_age, self.billing.local))
                if plan.total <= 0:
                    raise RefundRefused(f"{email} has no balance to refund")
                if who.owner.identity is Identity.UNVERIFIED and not verified:
                    raise RefundRefused(
                        "the customer's identity is not verified: verify it, then use "
                        f"/refund {number} full verified REASON"
                    )
                earlier = await session.scalar(select(Refund).where(Refund.key == plan.key))
                if earlier is not None:
                    return self._result(earlier, repeated=True)
                refund = await self._new_refund(session, plan, who, True, verified, reason)
                result = self._result(refund, repeated=False, plan=plan)
            return result

    # -- approving ----------------------------------------------------------------------

    async def approve(
        self, refund_id: int, telegram_id: int, *, ticket: int | None = None
    ) -> RefundResult:
        """An admin (not the requester) approves a held refund; it executes if still the same.

        `ticket` is the ticket whose button was pressed: a refund of another ticket is refused.
        A refusal is audited on the refund's own ticket.
        """
        tried: dict[str, str] = {}
        try:
            async with self.sessions() as session:
                agent = await _agent(session, telegram_id)
                if agent.role != Role.ADMIN.value:
                    raise NotAllowed("only an admin can approve a refund")
                held = await session.get(Refund, refund_id)
                if held is None:
                    raise NotFound(f"there is no refund {refund_id}")
                if ticket is not None and held.ticket_id != ticket:
                    raise RefundRefused(f"refund {refund_id} is not a refund of #{ticket}")
                owner = await session.get(Account, held.account_id)
                assert owner is not None
                email, scope = owner.email, RefundScope(held.scope)
            reading = None if self.billing.local else await self._read(email, scope)
            try:
                return await self._approve(refund_id, telegram_id, reading, tried)
            except IntegrityError:
                return await self._existing(tried.get("key"), None)
        except SupportbotError as error:
            number = ticket if ticket is not None else await self._ticket_of(refund_id)
            await self.record_refusal(
                telegram_id, "refund_approve", str(error), number, refund_id=refund_id
            )
            raise

    async def _ticket_of(self, refund_id: int) -> int | None:
        async with self.sessions() as session:
            return await session.scalar(select(Refund.ticket_id).where(Refund.id == refund_id))

    async def _approve(
        self, refund_id: int, telegram_id: int, earlier: Reading | None, tried: dict[str, str]
    ) -> RefundResult:
        async with self.sessions.begin() as session:
            agent = await _agent(session, telegram_id)
            refund = await session.get(Refund, refund_id)
            assert refund is not None
            tried["key"] = refund.key
            account = await _lock_account(session, refund.account_id)
            await session.refresh(refund, with_for_update=True)
            if refund.status == RefundStatus.EXECUTED.value:
                return self._result(refund, repeated=True)
            if refund.status != RefundStatus.AWAITING_APPROVAL.value:
                raise RefundRefused(f"refund {refund_id} was refused and cannot be approved")
            if refund.requested_by == agent.id:
                raise NotAllowed("a second admin must approve: you confirmed this refund")
            scope = RefundScope(refund.scope)
            reading = await self._reading(session, account.email, earlier, scope)
            now = self._clock()
            plan = await plan_of(session, account, reading, now, scope, local=self.billing.local)
            if stale(plan, now, self.max_age):
                raise RefundRefused(stale_refusal(plan, now, self.max_age, self.billing.local))
            if plan.key != refund.key:
                refund.status = RefundStatus.REFUSED.value
                refund.key = f"{refund.key}:void:{refund.id}"  # the same plan may come back
                audit.record(
                    session,
                    at=now,
                    action="refund_void",
                    agent=agent,
                    ticket_id=refund.ticket_id,
                    refund_id=refund.id,
                    reason="the plan changed before approval",
                )
                result = self._result(refund, repeated=False)
            else:
                refund.approved_by = agent.id
                audit.record(
                    session,
                    at=now,
                    action="refund_approve",
                    agent=agent,
                    ticket_id=refund.ticket_id,
                    refund_id=refund.id,
                    scope=refund.scope,
                    total=str(refund.total),
                    reason=refund.reason,
                    requested_by=refund.requested_by,
                )
                await self._execute(session, refund, plan, account, agent, now)
                result = self._result(refund, repeated=False)
        self._wakeup()
        if result.status is RefundStatus.REFUSED:
            raise PlanChanged(
                f"refund {refund_id} no longer matches what is refundable, so it was voided; "
                "open the panel again",
                None,
            )
        return result

    # -- executing ----------------------------------------------------------------------

    async def _execute(
        self,
        session: AsyncSession,
        refund: Refund,
        plan: RefundPlan,
        account: Account,
        agent: Agent,
        now: datetime,
    ) -> None:
        refs = await _payment_refs(session, [p.payment_id for p in plan.payouts])
        for part in plan.payouts:
            session.add(
                Payout(
                    refund_id=refund.id,
                    payment_id=part.payment_id,
                    amount_usd=part.amount,
                    currency=part.currency,
                    chain=part.chain,
                    wallet=part.wallet,
                    status="pending",
                    created_at=now,
                )
            )
        debit = BillingWrite(
            kind=WriteKind.REFUND,
            key=f"{refund.key}:debit",
            account_id=account.id,
            account_ref=account.external_id,
            email=account.email,
            at=now,
            amount=plan.balance_part,
            refund_id=refund.id,
            ticket_id=refund.ticket_id,
            reason=refund.reason or "",
            payouts=tuple(
                PayoutLine(
                    payment_id=p.payment_id,
                    payment_ref=refs.get(p.payment_id, ""),
                    purpose=p.purpose.value,
                    amount=p.amount,
                    currency=p.currency,
                    chain=p.chain,
                    wallet=p.wallet,
                )
                for p in plan.payouts
            ),
        )
        await self.billing.record(session, debit)
        if plan.includes_upgrade:
            account.plan = Plan.BASIC.value
            account.updated_at = now
            downgrade = replace(
                debit,
                kind=WriteKind.DOWNGRADE,
                key=f"{refund.key}:downgrade",
                amount=Decimal(0),
                payouts=(),
            )
            await self.billing.record(session, downgrade)
            await sync_plans(
                session,
                self._templates,
                at=now,
                reason="the Pro upgrade was refunded",
                accounts=[account.id],
                actor=f"agent:{agent.telegram_id}",
            )
        refund.status = RefundStatus.EXECUTED.value
        refund.executed_at = now
        await session.flush()  # a payout of an already-refunded payment fails here
        where = None
        if refund.ticket_id is not None:
            where = await notify_customer(
                session,
                self._templates,
                refund.ticket_id,
                "refunds/customer_refund",
                at=now,
                mail_domain=self._mail_domain,
                refund_id=refund.id,
                **plan_context(plan),
            )
        audit.record(
            session,
            at=now,
            action="refund_execute",
            agent=agent,
            ticket_id=refund.ticket_id,
            refund_id=refund.id,
            account=account.email,
            scope=plan.scope.value,
            total=str(plan.total),
            debited=str(plan.balance_part),
            pro_upgrade=plan.includes_upgrade,
            payouts=[
                {"payment": p.payment_id, "amount": str(p.amount), "wallet": p.wallet}
                for p in plan.payouts
            ],
            customer_told=where,
            billing="ledger" if self.billing.local else "outbox",
        )

    def _result(
        self, refund: Refund, *, repeated: bool, plan: RefundPlan | None = None
    ) -> RefundResult:
        status = RefundStatus(refund.status)
        text = self._templates.render(
            "agents/refund_result",
            refund_id=refund.id,
            status=status.value,
            total=cents(refund.total),
            repeated=repeated,
            upgrade=refund.includes_pro_upgrade,
            scope=refund.scope,
            reason=refund.reason,
            **(plan_context(plan) if plan is not None else {}),
        )
        return RefundResult(refund.id, refund.ticket_id, status, refund.total, repeated, text)

    async def _existing(self, key: str | None, number: int | None) -> RefundResult:
        async with self.sessions() as session:
            refund = await session.scalar(select(Refund).where(Refund.key == key)) if key else None
        if refund is None:
            target = f" /refund {number}" if number is not None else ""
            raise RefundRefused(
                "a payment of this refund was refunded at the same moment by someone else; "
                f"nothing more was refunded. Open the panel again{target}."
            )
        return self._result(refund, repeated=True)

    # -- refusals -----------------------------------------------------------------------

    @asynccontextmanager
    async def _refusals(
        self, telegram_id: int, action: str, number: int | None, **details: Any
    ) -> AsyncIterator[None]:
        """Audit a refusal leaving the block (in its own transaction), then let it go on."""
        try:
            yield
        except SupportbotError as error:
            await self.record_refusal(telegram_id, action, str(error), number, **details)
            raise

    async def record_refusal(
        self, telegram_id: int, action: str, reason: str, number: int | None, **details: Any
    ) -> None:
        """Audit a refused refund action; the refused transaction itself rolled back."""
        async with self.sessions.begin() as session:
            agent = await session.scalar(select(Agent).where(Agent.telegram_id == telegram_id))
            exists = number is not None and await session.get(Ticket, number) is not None
            audit.record(
                session,
                at=self._clock(),
                action=f"refused:{action}",
                agent=agent,
                actor=f"telegram:{telegram_id}",
                ticket_id=number if exists else None,
                reason=reason[:500],
                **details,
            )


async def _agent(session: AsyncSession, telegram_id: int) -> Agent:
    agent = await active_agent(session, telegram_id)
    if agent is None:
        raise NotAllowed("only agents can refund")
    return agent


async def _ticket_owner(session: AsyncSession, number: int) -> tuple[Ticket, Owner]:
    ticket = await session.get(Ticket, number)
    if ticket is None:
        raise NotFound(f"there is no ticket #{number}")
    owner = await owner_of_customer(session, ticket.customer_id)
    if owner is None:
        addresses = (
            await session.scalars(
                select(CustomerEmail.address).where(CustomerEmail.customer_id == ticket.customer_id)
            )
        ).all()
        known = f" ({', '.join(addresses)})" if addresses else ""
        raise RefundRefused(
            f"no account matches the customer of #{number}{known}: ask them to /link it, "
            "to write from the account's email, or tie it with /account N EMAIL"
        )
    return ticket, owner


async def _lock_account(session: AsyncSession, account_id: int) -> Account:
    """The account row, locked for this transaction (PostgreSQL; SQLite writes one at a time)."""
    account = await session.get(Account, account_id, with_for_update=True, populate_existing=True)
    assert account is not None
    return account


async def _payment_refs(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    """The billing system's id of each of these payments."""
    if not ids:
        return {}
    rows = await session.execute(select(Payment.id, Payment.external_id).where(Payment.id.in_(ids)))
    return {pid: str(ref) for pid, ref in rows}
