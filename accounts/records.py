"""Reading and checking a billing export (CSV or JSON) before anything touches the database.

A file holds records of three types, one per row or object: `account`, `payment` and `usage`.
Each record is checked on its own here (pure code, no I/O beyond reading the file); problems are
collected with the line they come from, so one run reports every bad row. The database side
(unknown accounts, ids already imported with other content) is `accounts.importer`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

from accounts.ledger import normalise_email
from accounts.money import MoneyError, money
from accounts.refund_rules import Purpose
from tickets.errors import SupportbotError

ID_LIMIT = 200
PROBLEMS_SHOWN = 20
# Times a billing export can hold: nothing before this, nothing later than the import's own
# time plus a little clock skew between the two systems.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(minutes=5)
# Crypto amounts: at most this many digits on either side of the point (wei has 18 decimals).
CRYPTO_DIGITS = 30
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?"
# An account address: a dot-atom local part and a domain of at least two labels (letters of any
# script, digits and inner hyphens) -- one address, nothing a mail header could read as two.
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")


class RecordType(StrEnum):
    ACCOUNT = "account"
    PAYMENT = "payment"
    USAGE = "usage"


@dataclass(frozen=True)
class RowProblem:
    """One bad record: where it is in the file and what is wrong with it."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ImportRefused(SupportbotError):
    """The file has bad rows; nothing from it was applied."""

    def __init__(self, source: str, problems: list[RowProblem]) -> None:
        if len(problems) == 1:  # one line, as the command line refuses any bad input
            super().__init__(f"{source}: {problems[0]}; nothing was imported")
        else:
            shown = "\n".join(f"  {p}" for p in problems[:PROBLEMS_SHOWN])
            more = len(problems) - PROBLEMS_SHOWN
            tail = f"\n  … and {more} more" if more > 0 else ""
            super().__init__(
                f"{source}: {len(problems)} bad rows, nothing was imported:\n{shown}{tail}"
            )
        self.problems = problems


@dataclass(frozen=True)
class AccountRecord:
    line: int
    external_id: str
    email: str
    plan: str
    pro_since: datetime | None
    pro_limits_used_at: datetime | None


@dataclass(frozen=True)
class PaymentRecord:
    line: int
    external_id: str
    account: str
    purpose: Purpose
    amount_usd: Decimal
    crypto_amount: str
    currency: str
    chain: str
    wallet: str
    tx_hash: str
    paid_at: datetime


@dataclass(frozen=True)
class UsageRecord:
    line: int
    external_id: str
    account: str
    amount_usd: Decimal
    at: datetime
    note: str


@dataclass(frozen=True)
class Batch:
    """Every checked record of one file, duplicates (same id, same content) folded."""

    accounts: tuple[AccountRecord, ...]
    payments: tuple[PaymentRecord, ...]
    usage: tuple[UsageRecord, ...]

    @property
    def size(self) -> int:
        return len(self.accounts) + len(self.payments) + len(self.usage)


class _Bad(Exception):
    pass


def read_file(path: Path, kind: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """The records of a CSV or JSON file with their line numbers; the suffix picks the format."""
    kind = kind or ("csv" if path.suffix.lower() == ".csv" else "json")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportRefused(path.name, [RowProblem(1, f"not UTF-8 text: {error}")]) from None
    except OSError as error:
        raise SupportbotError(f"cannot read {path}: {error.strerror or error}") from None
    if kind == "csv":
        return read_csv(text, path.name)
    return read_json(text, path.name)


def read_csv(text: str, source: str = "CSV") -> list[tuple[int, dict[str, Any]]]:
    """CSV with a header row; an empty cell is an absent value."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "type" not in [f.strip() for f in reader.fieldnames]:
        raise ImportRefused(source, [RowProblem(1, "the header row must name a `type` column")])
    records: list[tuple[int, dict[str, Any]]] = []
    line = reader.line_num + 1
    try:
        for row in reader:
            if None in row:
                raise ImportRefused(source, [RowProblem(line, "more cells than header columns")])
            cleaned = {k.strip(): v for k, v in row.items() if k and v not in (None, "")}
            if cleaned:
                records.append((line, cleaned))
            line = reader.line_num + 1
    except csv.Error as error:
        raise ImportRefused(source, [RowProblem(reader.line_num, f"not CSV: {error}")]) from None
    return records


def read_json(text: str, source: str = "JSON") -> list[tuple[int, dict[str, Any]]]:
    """A JSON array of objects, or JSON Lines; numbers are read as exact decimals."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    records: list[tuple[int, dict[str, Any]]] = []
    position = _skip(text, 0)
    in_array = text.startswith("[", position)
    if in_array:
        position = _skip(text, position + 1)
    while position < len(text):
        if in_array and text.startswith("]", position):
            if _skip(text, position + 1) != len(text):
                raise ImportRefused(source, [RowProblem(_line(text, position), "text after ]")])
            return records
        line = _line(text, position)
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ImportRefused(
                source, [RowProblem(error.lineno, f"not JSON: {error.msg}")]
            ) from None
        except RecursionError:  # arrays or objects nested thousands deep
            raise ImportRefused(source, [RowProblem(line, "JSON nested too deeply")]) from None
        if not isinstance(value, dict):
            raise ImportRefused(source, [RowProblem(line, "each record must be a JSON object")])
        records.append((line, value))
        position = _skip(text, position)
        if in_array and text.startswith(",", position):
            position = _skip(text, position + 1)
    if in_array:
        raise ImportRefused(source, [RowProblem(_line(text, len(text)), "the array is not closed")])
    return records


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def check_records(
    records: Iterable[tuple[int, Mapping[str, Any]]], source: str, *, now: datetime | None = None
) -> Batch:
    """Check every record; all problems at once, or a batch where each id appears once.

    Given `now`, a time later than it (plus `CLOCK_SKEW`) is a bad row: a payment cannot have
    been made in the future.
    """
    latest = now + CLOCK_SKEW if now is not None else datetime.max.replace(tzinfo=UTC)
    problems: list[RowProblem] = []
    seen: dict[tuple[RecordType, str], AccountRecord | PaymentRecord | UsageRecord] = {}
    emails: dict[str, AccountRecord] = {}
    for line, raw in records:
        try:
            record = _record(line, raw, latest)
        except _Bad as error:
            problems.append(RowProblem(line, str(error)))
            continue
        key = (_type_of(record), record.external_id)
        earlier = seen.get(key)
        if earlier is not None:
            if _content(earlier) != _content(record):
                problems.append(
                    RowProblem(
                        line,
                        f"{key[0].value} id {record.external_id!r} is also on line "
                        f"{earlier.line} with different content",
                    )
                )
            continue
        if isinstance(record, AccountRecord):
            other = emails.get(record.email)
            if other is not None:
                problems.append(
                    RowProblem(line, f"email {record.email} is also account on line {other.line}")
                )
                continue
            emails[record.email] = record
        seen[key] = record
    if problems:
        raise ImportRefused(source, problems)
    values = list(seen.values())
    return Batch(
        accounts=tuple(r for r in values if isinstance(r, AccountRecord)),
        payments=tuple(r for r in values if isinstance(r, PaymentRecord)),
        usage=tuple(r for r in values if isinstance(r, UsageRecord)),
    )


def _type_of(record: AccountRecord | PaymentRecord | UsageRecord) -> RecordType:
    if isinstance(record, AccountRecord):
        return RecordType.ACCOUNT
    return RecordType.PAYMENT if isinstance(record, PaymentRecord) else RecordType.USAGE


def _content(record: AccountRecord | PaymentRecord | UsageRecord) -> tuple[Any, ...]:
    values = dict(record.__dict__)
    values.pop("line")
    return tuple(values.items())


def _record(
    line: int, raw: Mapping[str, Any], latest: datetime
) -> AccountRecord | PaymentRecord | UsageRecord:
    fields = _Fields(raw, latest)
    kind = fields.text("type").lower()
    if kind == RecordType.ACCOUNT:
        plan = fields.optional("plan", "basic").lower()
        if plan not in ("basic", "pro"):
            raise _Bad(f"plan must be basic or pro, not {plan!r}")
        record: AccountRecord | PaymentRecord | UsageRecord = AccountRecord(
            line=line,
            external_id=fields.ident("id"),
            email=fields.email("email"),
            plan=plan,
            pro_since=fields.moment("pro_since", required=False),
            pro_limits_used_at=fields.moment("pro_limits_used_at", required=False),
        )
    elif kind == RecordType.PAYMENT:
        purpose = fields.optional("purpose", Purpose.TOPUP.value).lower()
        if purpose not in (Purpose.TOPUP, Purpose.PRO_UPGRADE):
            raise _Bad(f"purpose must be topup or pro_upgrade, not {purpose!r}")
        record = PaymentRecord(
            line=line,
            external_id=fields.ident("id"),
            account=fields.ident("account"),
            purpose=Purpose(purpose),
            amount_usd=fields.positive_amount("amount_usd"),
            crypto_amount=fields.crypto("crypto_amount"),
            currency=fields.text("currency", 16).upper(),
            chain=fields.text("chain", 32).lower(),
            wallet=fields.text("wallet", 200),
            tx_hash=fields.text("tx_hash", 200),
            paid_at=_required(fields.moment("paid_at")),
        )
    elif kind == RecordType.USAGE:
        record = UsageRecord(
            line=line,
            external_id=fields.ident("id"),
            account=fields.ident("account"),
            amount_usd=fields.positive_amount("amount_usd"),
            at=_required(fields.moment("at")),
            note=fields.optional("note", "")[:500],
        )
    else:
        raise _Bad(f"type must be account, payment or usage, not {kind!r}")
    unknown = sorted(set(raw) - fields.read - {"type"})
    if unknown:
        raise _Bad(
            f"unknown field{'s' if len(unknown) > 1 else ''} for {kind}: {', '.join(unknown)}"
        )
    return record


def _required(value: datetime | None) -> datetime:
    assert value is not None
    return value


class _Fields:
    """Typed access to one record's values; every failure names the field."""

    def __init__(self, raw: Mapping[str, Any], latest: datetime) -> None:
        self._raw = raw
        self._latest = latest
        self.read: set[str] = set()

    def _get(self, name: str) -> Any:
        self.read.add(name)
        value = self._raw.get(name)
        return value.strip() if isinstance(value, str) else value

    def text(self, name: str, limit: int = 320) -> str:
        value = self._get(name)
        if value is None or value == "":
            raise _Bad(f"{name} is missing")
        if not isinstance(value, str):
            raise _Bad(f"{name} must be text, not {value!r}")
        if len(value) > limit:
            raise _Bad(f"{name} is longer than {limit} characters")
        if any(ord(c) < 32 for c in value):
            raise _Bad(f"{name} holds control characters")
        return value

    def optional(self, name: str, default: str) -> str:
        value = self._get(name)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            raise _Bad(f"{name} must be text, not {value!r}")
        return value

    def ident(self, name: str) -> str:
        value = self._get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is None or value == "":
            raise _Bad(f"{name} is missing")
        if not isinstance(value, str) or len(value) > ID_LIMIT:
            raise _Bad(f"{name} must be an id of at most {ID_LIMIT} characters")
        return value

    def email(self, name: str) -> str:
        value = normalise_email(self.text(name, 320))
        local, _, domain = value.rpartition("@")
        if not _ADDRESS.fullmatch(value) or len(local) > 64 or len(domain) > 255:
            raise _Bad(f"{name} is not an email address: {value!r}")
        return value

    def positive_amount(self, name: str) -> Decimal:
        value = self._get(name)
        if value is None or value == "":
            raise _Bad(f"{name} is missing")
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise _Bad(f"{name} must be a decimal amount, not {value!r}")
        try:
            amount = money(value)
        except MoneyError as error:
            raise _Bad(f"{name}: {error}") from None
        if amount <= 0:
            raise _Bad(f"{name} must be more than zero, not {amount}")
        return amount

    def crypto(self, name: str) -> str:
        value = self._get(name)
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise _Bad(f"{name} is missing")
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise _Bad(f"{name} is not a decimal number: {value!r}") from None
        if not amount.is_finite() or amount <= 0 or len(value) > 80:
            raise _Bad(f"{name} must be a positive decimal number, not {value!r}")
        places = -int(amount.as_tuple().exponent)  # finite, so the exponent is a number
        if amount.adjusted() >= CRYPTO_DIGITS or places > CRYPTO_DIGITS:
            raise _Bad(
                f"{name} must have at most {CRYPTO_DIGITS} digits before and after the point, "
                f"not {value!r}"
            )
        return value

    def moment(self, name: str, *, required: bool = True) -> datetime | None:
        value = self._get(name)
        if value is None or value == "":
            if required:
                raise _Bad(f"{name} is missing")
            return None
        if not isinstance(value, str):
            raise _Bad(f"{name} must be an ISO 8601 time, not {value!r}")
        try:
            moment = datetime.fromisoformat(value)
            moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+01:00 and the like
            raise _Bad(f"{name} is not an ISO 8601 time: {value!r}") from None
        if moment < EARLIEST:
            raise _Bad(f"{name} is before {EARLIEST.year}: {value!r}")
        if moment > self._latest:
            raise _Bad(f"{name} is in the future: {value!r}")
        return moment
