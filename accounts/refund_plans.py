"""Refund plans from the system of record: what the Billing port answers, made into a plan.

The port's answer (balance, recent payments, whether Pro-tier limits were used, `as_of`) is
turned into the pure policy's facts (`accounts.refund_rules`). Payments are matched to the desk's
own rows by the billing system's payment id (mirrored there when the billing system is not the
desk's ledger), because payouts refer to them and a payment is refunded at most once, ever.
While a refund debit the desk decided has not reached a remote billing system yet, its amount
is taken off the balance the billing system reports, so nothing is refunded twice meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.billing import (
    AccountSummary,
    Billing,
    BillingMalformed,
    BillingUnavailable,
    PaymentLine,
)
from accounts.money import cents
from accounts.refund_rules import AccountFacts, PaymentFacts, Purpose, RefundPlan, RefundScope
from accounts.refund_rules import plan_refund as policy
from accounts.tables import Account, Payment, Payout
from tickets.errors import SupportbotError
from tickets.model import OutboxKind, OutboxStatus
from tickets.ports import Renderer
from tickets.tables import OutboxRow

DEFAULT_MAX_AGE = timedelta(hours=1)


class RefundRefused(SupportbotError):
    """A refund action that cannot go ahead; nothing was changed."""


@dataclass(frozen=True)
class Reading:
    """What the billing system said about an account, read before the refund's transaction."""

    summary: AccountSummary
    history: tuple[PaymentLine, ...] = ()  # FULL refunds: top-ups beyond the recent ones


async def read_account(
    billing: Billing,
    email: str,
    now: datetime,
    scope: RefundScope = RefundScope.ALL,
    *,
    session: AsyncSession | None = None,
) -> Reading:
    """Read the account through the port; a failure is one clear refusal that changes nothing."""
    try:
        summary = await billing.lookup(email, now, session=session)
        if summary is None:
            raise RefundRefused(f"the billing system has no account {email}; nothing was done")
        history: tuple[PaymentLine, ...] = ()
        if scope is RefundScope.FULL:
            history = await billing.history(
                summary, max(summary.balance, Decimal(0)), session=session
            )
    except BillingMalformed as error:
        raise RefundRefused(
            f"the billing system answered with malformed data ({error}); nothing was done"
        ) from None
    except BillingUnavailable as error:
        raise RefundRefused(
            f"cannot read {email} from the billing system ({error}); nothing was done. "
            "Try again in a minute."
        ) from None
    return Reading(summary, history)


def stale(plan: RefundPlan, now: datetime, max_age: timedelta) -> bool:
    """Whether the data behind a plan is too old to move money on (or of unknown age)."""
    return plan.as_of is None or now - plan.as_of > max_age


def stale_refusal(plan: RefundPlan, now: datetime, max_age: timedelta, local: bool) -> str:
    """Why money does not move on this data, in one line, and what to do about it."""
    if plan.as_of is None:
        age = "the ledger has never been imported"
    else:
        old = _age(now - plan.as_of)
        age = f"the account data is as of {plan.as_of:%Y-%m-%d %H:%M} UTC ({old} old)"
    fix = (
        "import a fresh billing export (supportbot accounts import), then confirm again"
        if local
        else "the billing system's own data is that old; try again when it is fresher"
    )
    return f"{age}, older than BILLING_MAX_AGE ({_age(max_age)}): nothing was refunded; {fix}"


def _age(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


async def plan_of(
    session: AsyncSession,
    account: Account,
    reading: Reading,
    now: datetime,
    scope: RefundScope,
    *,
    local: bool,
) -> RefundPlan:
    """The refund plan of an account from what the billing system said, in this transaction."""
    summary = reading.summary
    lines = {p.ref: p for p in (*summary.payments, *reading.history) if p.ref}
    known = await _payment_rows(session, account.id, list(lines.values()), mirror=not local)
    payments = []
    for ref, line in lines.items():
        if ref not in known:
            continue
        payment_id, refunded = known[ref]
        payments.append(
            PaymentFacts(
                id=payment_id,
                purpose=Purpose(line.purpose),
                amount=line.amount_usd,
                currency=line.currency,
                chain=line.chain,
                wallet=line.wallet,
                paid_at=line.paid_at,
                refunded=refunded,
            )
        )
    balance = summary.balance
    if not local:
        balance -= await pending_debits(session, summary.ref)
    facts = AccountFacts(
        id=account.id,
        email=account.email,
        plan=summary.plan,
        balance=balance,
        pro_since=summary.pro_since,
        pro_limits_used=summary.pro_limits_used,
    )
    return policy(facts, payments, now, scope, as_of=summary.as_of)


async def _payment_rows(
    session: AsyncSession, account_id: int, lines: Sequence[PaymentLine], *, mirror: bool
) -> dict[str, tuple[int, bool]]:
    """The desk's row of each payment (by the billing system's id) and whether it was refunded;
    payments the desk has not seen are added when `mirror` (a remote billing system)."""
    refs = [line.ref for line in lines]
    if not refs:
        return {}
    rows = await session.execute(
        select(Payment.external_id, Payment.id, Payout.id)
        .outerjoin(Payout, Payout.payment_id == Payment.id)
        .where(Payment.external_id.in_(refs), Payment.account_id == account_id)
    )
    found = {str(ref): (pid, payout is not None) for ref, pid, payout in rows}
    missing = [line for line in lines if line.ref not in found]
    if mirror and missing:
        for line in missing:
            row = Payment(
                account_id=account_id,
                external_id=line.ref,
                purpose=line.purpose,
                amount_usd=line.amount_usd,
                crypto_amount=line.crypto_amount,
                currency=line.currency,
                chain=line.chain,
                wallet=line.wallet,
                tx_hash=line.tx_hash,
                paid_at=line.paid_at,
            )
            session.add(row)
            await session.flush()
            found[line.ref] = (row.id, False)
    return found


async def pending_debits(session: AsyncSession, account_ref: str | None) -> Decimal:
    """Refund debits the desk wrote for this account that the billing system has not taken yet
    (waiting in the outbox, or failed for good and reported to the agents)."""
    if account_ref is None:
        return Decimal(0)
    payloads = await session.scalars(
        select(OutboxRow.payload).where(
            OutboxRow.recipient == account_ref,
            OutboxRow.kind == OutboxKind.BILLING_REFUND.value,
            OutboxRow.status != OutboxStatus.DELIVERED.value,
        )
    )
    return sum((Decimal(str(p.get("amount", "0"))) for p in payloads), Decimal(0))


def plan_context(plan: RefundPlan) -> dict[str, Any]:
    """What the templates need to show a plan."""
    return {"plan": plan, "usd": cents}


async def eligibility_summary(
    session: AsyncSession,
    account: Account,
    reading: Reading,
    now: datetime,
    templates: Renderer,
    *,
    local: bool,
) -> str:
    """A few lines saying what the account could have refunded now (for /balance and tickets)."""
    plan = await plan_of(session, account, reading, now, RefundScope.ALL, local=local)
    return templates.render("refunds/summary", **plan_context(plan))
