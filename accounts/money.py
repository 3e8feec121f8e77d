"""Money as `Decimal` with a fixed precision, stored as whole micro-dollars.

SQLite has no decimal type (SQLAlchemy's Numeric would round-trip through floats there), so
every amount in the ledger is kept as a signed 64-bit count of millionths of a dollar. Sums in
SQL stay exact on both databases, and Python only ever sees `Decimal`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from sqlalchemy import BigInteger, Dialect
from sqlalchemy.types import TypeDecorator

PLACES = 6
QUANTUM = Decimal(1).scaleb(-PLACES)
MICROS = 10**PLACES
LIMIT = Decimal(10) ** 12  # a trillion dollars: far above any real amount, far below 2**63 micros


class MoneyError(ValueError):
    """An amount that is not a finite decimal number of dollars within range."""


def money(value: Decimal | int | str) -> Decimal:
    """Parse an amount of dollars exactly; refuse floats, NaN, infinities and more than 6 places."""
    if isinstance(
        value, float
    ):  # pragma: no cover - guarded by the type, kept for callers at runtime
        raise MoneyError("amounts are never floats")
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation as error:
        raise MoneyError(f"not an amount: {value!r}") from error
    if not amount.is_finite():
        raise MoneyError(f"not an amount: {value!r}")
    if abs(amount) >= LIMIT:  # first: quantizing 1e999999 would overflow the context
        raise MoneyError(f"amount out of range: {value!r}")
    if amount != amount.quantize(QUANTUM, rounding=ROUND_HALF_EVEN):
        raise MoneyError(f"more than {PLACES} decimal places: {value!r}")
    return amount.quantize(QUANTUM)


def to_micros(amount: Decimal) -> int:
    """Whole micro-dollars of an amount that `money` accepted."""
    return int(money(amount) * MICROS)


def from_micros(micros: int) -> Decimal:
    """The dollar amount of a count of micro-dollars."""
    return Decimal(micros).scaleb(-PLACES)


def cents(amount: Decimal) -> str:
    """A dollar amount as people read it: `$12.50`, `-$0.000100` only when cents would lie."""
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    shown = amount.quantize(Decimal("0.01"))
    text = f"{shown:,.2f}" if shown == amount else f"{amount.normalize():,f}"
    return f"{sign}${text}"


class Money(TypeDecorator[Decimal]):
    """A `Decimal` dollar amount stored as whole micro-dollars (BIGINT) on every dialect."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        return None if value is None else to_micros(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else from_micros(int(value))
