"""The pure SLA credit rules: who is owed a credit for a month, and how much (1 % of net spend)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.credits import credit_for
from accounts.ledger_billing import Assessment, MonthTotals, assess


@pytest.mark.parametrize(
    ("opening", "usage", "peak", "expected"),
    [
        ("100", "-45", "-30", (True, "45")),  # money at the start
        ("0", "-50", "50", (True, "50")),  # empty at the start, a top-up spent at once
        ("0", "0", None, (False, "0")),  # no entries in the month
        ("-5", "0", "3", (False, "0")),  # never above zero
        ("0", "-10", "-10", (False, "10")),  # never above zero (the spend is moot)
        ("-10", "0", "10.000001", (True, "0")),  # one micro-dollar above zero
        ("10", "4", "4", (True, "0")),  # usage given back beyond what was used: not negative
    ],
)
def test_assess(opening: str, usage: str, peak: str | None, expected: tuple[bool, str]) -> None:
    positive, spend = expected
    month = MonthTotals(Decimal(opening), Decimal(usage), None if peak is None else Decimal(peak))
    assert assess(month) == Assessment(positive, Decimal(spend))


@pytest.mark.parametrize(
    ("spend", "credit"),
    [
        ("45", "0.45"),
        ("112.50", "1.125"),  # kept to the micro-dollar: nothing below a cent is lost
        ("113.50", "1.135"),
        ("123.456789", "1.234568"),  # 1.23456789: half to even at the sixth place
        ("0.49", "0.0049"),
        ("0.000050", "0"),  # half a micro-dollar rounds to even: nothing
        ("0.000150", "0.000002"),  # 1.5 micro-dollars: to even
        ("0.000250", "0.000002"),  # 2.5 micro-dollars: to even
    ],
)
def test_credit_is_one_percent_to_the_micro_dollar(spend: str, credit: str) -> None:
    assert credit_for(Decimal(spend)) == Decimal(credit)
