"""Refund eligibility under the 7-day policy. Pure code: facts in, a frozen `RefundPlan` out.

The rules (DESIGN.md §1 "Refunds"):

* A top-up is eligible while `now < paid_at + 7 days` (the deadline itself is already too late).
* Refundable amount = min(current balance, sum of eligible top-ups), split over those top-ups
  newest first; each part goes back to that payment's own wallet (same currency and chain).
* The Pro upgrade is refundable while `now < paid_at + 7 days` and only if the account has not
  used Pro-tier rate limits since it became Pro. It was paid by its own payment and never
  credited the balance, so its refund is a payout to that payment's wallet and does not debit
  the balance; refunding it puts the account back on Basic.
* A payment that already has a payout (of any amount) is settled: it is never eligible again.
  A top-up that got no part in an earlier refund (the balance had run out) has no payout and
  stays eligible while its window lasts.

The agent chooses what to refund (`RefundScope`): everything eligible, only the Pro upgrade
(the balance stays), or only the balance (Pro stays). An admin may also refund the whole
remaining balance outside the window (`FULL`): split over the top-ups newest first, each part
to its own wallet, exactly as the 7-day rule splits, but with no window; the upgrade is not part
of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from accounts.money import to_micros

WINDOW = timedelta(days=7)
ZERO = Decimal(0)


class Purpose(StrEnum):
    """What a payment bought: balance (a top-up) or the lifetime Pro plan."""

    TOPUP = "topup"
    PRO_UPGRADE = "pro_upgrade"


class RefundScope(StrEnum):
    """What a refund covers; the letter is how a Confirm button names it."""

    ALL = "all"  # everything eligible under the 7-day rule
    UPGRADE = "upgrade"  # only the Pro upgrade: the balance stays
    BALANCE = "balance"  # only the balance: Pro stays
    FULL = "full"  # an admin's refund of the whole balance outside the window

    @property
    def letter(self) -> str:
        return self.value[0]

    @classmethod
    def of_letter(cls, letter: str) -> RefundScope:
        """The scope a button's letter names (ValueError for anything else)."""
        for scope in cls:
            if scope.letter == letter:
                return scope
        raise ValueError(f"no refund scope {letter!r}")


@dataclass(frozen=True)
class PaymentFacts:
    """A payment as eligibility sees it; `refunded` when it already has a payout."""

    id: int
    purpose: Purpose
    amount: Decimal
    currency: str
    chain: str
    wallet: str
    paid_at: datetime
    refunded: bool = False

    @property
    def deadline(self) -> datetime:
        """The first moment the payment is no longer refundable."""
        return self.paid_at + WINDOW


@dataclass(frozen=True)
class AccountFacts:
    """What eligibility needs to know about the account itself."""

    id: int
    email: str
    plan: str
    balance: Decimal
    pro_since: datetime | None = None
    pro_limits_used_at: datetime | None = None
    # What the billing system says directly, when it does not give the time of the last use.
    pro_limits_used: bool | None = None


@dataclass(frozen=True)
class RefundPart:
    """Money going back to one payment's wallet."""

    payment_id: int
    purpose: Purpose
    amount: Decimal  # what goes back
    paid: Decimal  # what the payment was
    currency: str
    chain: str
    wallet: str
    paid_at: datetime
    deadline: datetime


@dataclass(frozen=True)
class Excluded:
    """A payment the plan leaves out, and why."""

    payment_id: int
    purpose: Purpose
    amount: Decimal
    reason: str


@dataclass(frozen=True)
class UpgradeCheck:
    """The Pro upgrade's standing: refundable or not, and why not."""

    payment_id: int
    amount: Decimal
    currency: str
    chain: str
    wallet: str
    paid_at: datetime
    deadline: datetime
    qualifies: bool
    reason: str  # why it qualifies or not, in words an agent reads


@dataclass(frozen=True)
class RefundPlan:
    """What a refund of an account would pay back right now, payment by payment."""

    account_id: int
    email: str
    at: datetime
    balance: Decimal
    parts: tuple[RefundPart, ...]  # top-ups, newest first
    upgrade: UpgradeCheck | None
    excluded: tuple[Excluded, ...]
    scope: RefundScope = RefundScope.ALL
    as_of: datetime | None = None  # how fresh the account data behind the plan is

    @property
    def balance_part(self) -> Decimal:
        """What the refund debits from the balance (the top-up parts)."""
        return sum((p.amount for p in self.parts), ZERO)

    @property
    def includes_upgrade(self) -> bool:
        return (
            self.scope in (RefundScope.ALL, RefundScope.UPGRADE)
            and self.upgrade is not None
            and self.upgrade.qualifies
        )

    @property
    def total(self) -> Decimal:
        """Everything that goes back: the top-up parts and, if included, the upgrade."""
        upgrade = self.upgrade.amount if self.upgrade and self.includes_upgrade else ZERO
        return self.balance_part + upgrade

    @property
    def payouts(self) -> tuple[RefundPart, ...]:
        """One payout per payment: the top-up parts, then the upgrade if included."""
        if self.upgrade is None or not self.includes_upgrade:
            return self.parts
        u = self.upgrade
        return (
            *self.parts,
            RefundPart(
                payment_id=u.payment_id,
                purpose=Purpose.PRO_UPGRADE,
                amount=u.amount,
                paid=u.amount,
                currency=u.currency,
                chain=u.chain,
                wallet=u.wallet,
                paid_at=u.paid_at,
                deadline=u.deadline,
            ),
        )

    @property
    def key(self) -> str:
        """The refund's identity: the account and exactly which payments get how much.

        Two confirmations of the same plan (a double tap, a retry, a second agent) share it; a
        plan that changed in between (balance moved, a payment aged out) does not.
        """
        body = ";".join(f"{p.payment_id}={to_micros(p.amount)}" for p in self.payouts)
        digest = hashlib.sha256(f"{self.account_id}|{body}".encode()).hexdigest()
        return f"refund:{self.account_id}:{digest[:40]}"

    @property
    def fingerprint(self) -> str:
        """A short form of `key` that fits in a button."""
        return self.key.rsplit(":", 1)[1][:12]


def plan_refund(
    account: AccountFacts,
    payments: Iterable[PaymentFacts],
    now: datetime,
    scope: RefundScope = RefundScope.ALL,
    *,
    as_of: datetime | None = None,
) -> RefundPlan:
    """Decide what is refundable now: top-ups newest first up to the balance, and the upgrade,
    as far as the scope the agent chose reaches."""
    topups: list[PaymentFacts] = []
    excluded: list[Excluded] = []
    upgrades: list[PaymentFacts] = []
    windowed = scope is not RefundScope.FULL
    for payment in payments:
        if payment.purpose is Purpose.PRO_UPGRADE:
            if windowed:
                upgrades.append(payment)
        elif payment.refunded:
            excluded.append(_out(payment, "already refunded"))
        elif windowed and now >= payment.deadline:
            excluded.append(_out(payment, "the 7-day window has ended"))
        elif scope is RefundScope.UPGRADE:
            excluded.append(_out(payment, "left out: only the Pro upgrade is refunded"))
        else:
            topups.append(payment)
    topups.sort(key=lambda p: (p.paid_at, p.id), reverse=True)
    left = max(account.balance, ZERO)
    parts: list[RefundPart] = []
    for payment in topups:
        amount = min(left, payment.amount)
        if amount <= ZERO:
            excluded.append(_out(payment, "nothing left: the balance is covered by newer top-ups"))
            continue
        left -= amount
        parts.append(
            RefundPart(
                payment_id=payment.id,
                purpose=payment.purpose,
                amount=amount,
                paid=payment.amount,
                currency=payment.currency,
                chain=payment.chain,
                wallet=payment.wallet,
                paid_at=payment.paid_at,
                deadline=payment.deadline,
            )
        )
    upgrade = _upgrade(account, upgrades, now)
    return RefundPlan(
        account_id=account.id,
        email=account.email,
        at=now,
        balance=account.balance,
        parts=tuple(parts),
        upgrade=upgrade,
        excluded=tuple(excluded),
        scope=scope,
        as_of=as_of,
    )


def _out(payment: PaymentFacts, reason: str) -> Excluded:
    return Excluded(payment.id, payment.purpose, payment.amount, reason)


def _upgrade(
    account: AccountFacts, upgrades: list[PaymentFacts], now: datetime
) -> UpgradeCheck | None:
    """The latest upgrade payment, and whether it can be refunded now."""
    if not upgrades:
        return None
    payment = max(upgrades, key=lambda p: (p.paid_at, p.id))
    since = account.pro_since or payment.paid_at
    used_at = account.pro_limits_used_at
    used = account.pro_limits_used
    if used is None:
        used = used_at is not None and used_at >= since
    if payment.refunded:
        qualifies, reason = False, "already refunded"
    elif account.plan != "pro":
        qualifies, reason = False, "the account is not on Pro"
    elif now >= payment.deadline:
        qualifies, reason = False, "the 7-day window has ended"
    elif used:
        qualifies, reason = False, "Pro-tier rate limits were used since the upgrade"
    else:
        qualifies, reason = True, "within 7 days and Pro-tier limits not used since"
    return UpgradeCheck(
        payment_id=payment.id,
        amount=payment.amount,
        currency=payment.currency,
        chain=payment.chain,
        wallet=payment.wallet,
        paid_at=payment.paid_at,
        deadline=payment.deadline,
        qualifies=qualifies,
        reason=reason,
    )
