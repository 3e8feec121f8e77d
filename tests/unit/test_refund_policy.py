"""Refund eligibility (accounts/refund_rules.py): pure tables of cases, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounts.refund_rules import AccountFacts, PaymentFacts, Purpose, plan_refund
from supportbot.settings import SettingsError, load_settings

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def topup(
    pid: int, amount: str, ago: timedelta, *, wallet: str = "W", refunded: bool = False
) -> PaymentFacts:
    return PaymentFacts(
        id=pid,
        purpose=Purpose.TOPUP,
        amount=Decimal(amount),
        currency="USDT",
        chain="tron",
        wallet=wallet,
        paid_at=NOW - ago,
        refunded=refunded,
    )


def upgrade(pid: int, ago: timedelta, *, refunded: bool = False) -> PaymentFacts:
    return PaymentFacts(
        id=pid,
        purpose=Purpose.PRO_UPGRADE,
        amount=Decimal(19),
        currency="BTC",
        chain="bitcoin",
        wallet="bc1upgrade",
        paid_at=NOW - ago,
        refunded=refunded,
    )


def account(balance: str, *, plan: str = "basic", **extra: Any) -> AccountFacts:
    return AccountFacts(id=7, email="a@example.org", plan=plan, balance=Decimal(balance), **extra)


@pytest.mark.parametrize(
    ("age", "eligible"),
    [
        (7 * DAY - timedelta(microseconds=1), True),  # the last moment
        (7 * DAY, False),  # exactly 7 days: the deadline itself is too late
        (7 * DAY + timedelta(seconds=1), False),
        (timedelta(0), True),
        (3 * DAY, True),
    ],
)
def test_the_seven_day_edge(age: timedelta, eligible: bool) -> None:
    plan = plan_refund(account("50"), [topup(1, "50", age)], NOW)
    assert (plan.total == Decimal(50)) is eligible
    if eligible:
        assert plan.parts[0].deadline == NOW - age + 7 * DAY
    else:
        assert plan.parts == () and plan.excluded[0].reason == "the 7-day window has ended"


@pytest.mark.parametrize(
    ("balance", "expected"),
    [
        # three top-ups of 10 (oldest, wallet A), 20 (B), 30 (newest, C): newest first
        ("100", [(3, "30"), (2, "20"), (1, "10")]),  # balance above the sum: the sum
        ("60", [(3, "30"), (2, "20"), (1, "10")]),  # exactly the sum
        ("45", [(3, "30"), (2, "15")]),  # below: newest first, oldest gets nothing
        ("30", [(3, "30")]),
        ("12.345678", [(3, "12.345678")]),
        ("0", []),
        ("-5", []),  # an overdrawn account refunds nothing
    ],
)
def test_split_newest_first_over_wallets(balance: str, expected: list[tuple[int, str]]) -> None:
    payments = [
        topup(1, "10", 5 * DAY, wallet="A"),
        topup(3, "30", 1 * DAY, wallet="C"),
        topup(2, "20", 3 * DAY, wallet="B"),
    ]
    plan = plan_refund(account(balance), payments, NOW)
    assert [(p.payment_id, p.amount) for p in plan.parts] == [(i, Decimal(a)) for i, a in expected]
    assert {p.payment_id: p.wallet for p in plan.parts} == {i: "ABC"[i - 1] for i, _ in expected}, (
        "each part goes back to its own payment's wallet"
    )
    assert plan.total == sum((Decimal(a) for _, a in expected), Decimal(0))
    left_out = {e.payment_id for e in plan.excluded}
    assert left_out == {1, 2, 3} - {i for i, _ in expected}


def test_old_top_ups_do_not_count_towards_the_sum() -> None:
    plan = plan_refund(account("100"), [topup(1, "70", 10 * DAY), topup(2, "20", 2 * DAY)], NOW)
    assert [(p.payment_id, p.amount) for p in plan.parts] == [(2, Decimal(20))]
    assert plan.total == Decimal(20)


def test_an_earlier_partial_refund() -> None:
    # Top-ups 1 (50) and 2 (50); an earlier refund at a balance of 70 paid back 50 of #2 and
    # 20 of #1: both have payouts and are settled for good, though #1 got only part.
    settled = [topup(1, "50", 4 * DAY, refunded=True), topup(2, "50", 2 * DAY, refunded=True)]
    fresh = topup(3, "40", 1 * DAY)
    plan = plan_refund(account("60"), [*settled, fresh], NOW)
    assert [(p.payment_id, p.amount) for p in plan.parts] == [(3, Decimal(40))]
    assert {e.payment_id: e.reason for e in plan.excluded} == {
        1: "already refunded",
        2: "already refunded",
    }
    # A top-up that got no part (the balance had run out) has no payout and stays eligible.
    unrefunded = topup(4, "25", 5 * DAY)
    plan = plan_refund(account("50"), [*settled, fresh, unrefunded], NOW)
    assert [(p.payment_id, p.amount) for p in plan.parts] == [(3, Decimal(40)), (4, Decimal(10))]


PRO_SINCE = NOW - 2 * DAY


@pytest.mark.parametrize(
    ("plan_name", "age", "used_at", "refunded", "qualifies", "reason"),
    [
        ("pro", 2 * DAY, None, False, True, "within 7 days"),
        ("pro", 2 * DAY, PRO_SINCE - DAY, False, True, "within 7 days"),  # used before upgrading
        ("pro", 2 * DAY, PRO_SINCE + timedelta(hours=1), False, False, "rate limits were used"),
        ("pro", 2 * DAY, PRO_SINCE, False, False, "rate limits were used"),
        ("pro", 7 * DAY, None, False, False, "window has ended"),
        ("pro", 2 * DAY, None, True, False, "already refunded"),
        ("basic", 2 * DAY, None, False, False, "not on Pro"),
    ],
)
def test_the_pro_upgrade(
    plan_name: str,
    age: timedelta,
    used_at: datetime | None,
    refunded: bool,
    qualifies: bool,
    reason: str,
) -> None:
    facts = account("30", plan=plan_name, pro_since=PRO_SINCE, pro_limits_used_at=used_at)
    plan = plan_refund(facts, [topup(1, "30", DAY), upgrade(9, age, refunded=refunded)], NOW)
    assert plan.upgrade is not None
    assert plan.upgrade.qualifies is qualifies and reason in plan.upgrade.reason
    # The upgrade never touches the balance: its refund is a payout of its own.
    assert plan.balance_part == Decimal(30)
    assert plan.total == Decimal(30) + (Decimal(19) if qualifies else 0)
    assert [p.payment_id for p in plan.payouts] == ([1, 9] if qualifies else [1])
    if qualifies:
        assert plan.payouts[-1].wallet == "bc1upgrade" and plan.payouts[-1].currency == "BTC"


def test_the_upgrade_alone_is_refundable_with_an_empty_balance() -> None:
    facts = account("0", plan="pro", pro_since=NOW - DAY)
    plan = plan_refund(facts, [upgrade(9, DAY)], NOW)
    assert plan.total == Decimal(19) and plan.balance_part == 0 and plan.includes_upgrade


def test_the_key_names_the_plan_exactly() -> None:
    payments = [topup(1, "10", DAY), topup(2, "20", 2 * DAY)]
    same = plan_refund(account("30"), payments, NOW)
    later = plan_refund(account("30"), payments, NOW + timedelta(hours=1))
    less = plan_refund(account("25"), payments, NOW)
    assert same.key == later.key, "the same payments and amounts are the same refund"
    assert less.key != same.key, "a moved balance is a different refund"
    assert len(same.fingerprint) == 12 and same.key.startswith("refund:7:" + same.fingerprint)
    aged = plan_refund(account("30"), payments, NOW + 6 * DAY)
    assert aged.key != same.key, "a payment aged out"


def test_plans_are_frozen() -> None:
    plan = plan_refund(account("10"), [topup(1, "10", DAY)], NOW)
    with pytest.raises(AttributeError):
        plan.balance = Decimal(0)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, Decimal(100)), ("250", Decimal(250)), ("0", Decimal(0))]
)
def test_the_approval_limit_setting(raw: str | None, expected: Decimal) -> None:
    environ = {} if raw is None else {"REFUND_APPROVAL_ABOVE_USD": raw}
    assert load_settings(environ, env_file=None).refund_approval_above == expected


@pytest.mark.parametrize("raw", ["lots", "-1", "NaN", "1e12"])
def test_a_broken_approval_limit_names_the_key(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^REFUND_APPROVAL_ABOVE_USD: "):
        load_settings({"REFUND_APPROVAL_ABOVE_USD": raw}, env_file=None)


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(500), places=2)


@given(
    balance=st.decimals(min_value=Decimal(-50), max_value=Decimal(2000), places=2),
    payments=st.lists(
        st.tuples(amounts, st.integers(min_value=0, max_value=14 * 24), st.booleans()),
        max_size=12,
    ),
)
def test_the_split_always_keeps_the_rules(
    balance: Decimal, payments: list[tuple[Decimal, int, bool]]
) -> None:
    facts = [
        topup(i, str(amount), timedelta(hours=hours), wallet=f"W{i}", refunded=refunded)
        for i, (amount, hours, refunded) in enumerate(payments, start=1)
    ]
    plan = plan_refund(account(str(balance)), facts, NOW)
    eligible = [p for p in facts if not p.refunded and p.deadline > NOW]
    assert plan.total == min(
        max(balance, Decimal(0)), sum((p.amount for p in eligible), Decimal(0))
    )
    by_id = {p.id: p for p in facts}
    for part in plan.parts:
        paid = by_id[part.payment_id]
        assert 0 < part.amount <= paid.amount and part.wallet == paid.wallet
        assert not paid.refunded and paid.deadline > NOW
    # Newest first: only the oldest payment that got anything can have got less than it paid.
    short = [p for p in plan.parts if p.amount < p.paid]
    assert short in ([], list(plan.parts[-1:]))
    assert [p.paid_at for p in plan.parts] == sorted((p.paid_at for p in plan.parts), reverse=True)
    assert {p.payment_id for p in plan.parts} | {e.payment_id for e in plan.excluded} == set(by_id)
