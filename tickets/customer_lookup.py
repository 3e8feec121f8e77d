"""Who wrote a customer message: their row found and locked, or created, and kept current.

A batch of messages reads all its senders in one statement before its first message
(`load_senders`), so that each message finds its customer without a round trip of its own; a
sender the batch did not read ahead (or a single call) is looked up on its own. A customer the
batch creates is remembered for its later messages too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Insert, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tickets.dialect_sql import insert_ignoring
from tickets.languages import ENGLISH, choose
from tickets.model import CustomerRef, Plan, storable_text
from tickets.ports import AccountPlans
from tickets.tables import customer_emails, customers

NAME_LIMIT = 200

SenderKey = tuple[str, str]  # ("telegram", "123") or ("email", "ann@example.com")

_COLUMNS = (
    customers.c.id,
    customers.c.name,
    customers.c.plan,
    customers.c.banned_at,
    customers.c.unreachable_at,
    customers.c.wants_new_ticket,
    customers.c.language,
    customers.c.client_language,
)
_BY_TELEGRAM = (
    select(*_COLUMNS).where(customers.c.telegram_id == bindparam("telegram_id")).with_for_update()
)
_BY_ADDRESS = (
    select(*_COLUMNS)
    .join(customer_emails, customer_emails.c.customer_id == customers.c.id)
    .where(customer_emails.c.address == bindparam("address"))
    .with_for_update(of=customers)
)
# Many senders at once, locked in id order, so that two batches cannot wait on each other.
_MANY_BY_TELEGRAM = (
    select(customers.c.telegram_id, *_COLUMNS)
    .where(customers.c.telegram_id.in_(bindparam("telegram_ids", expanding=True)))
    .order_by(customers.c.id)
    .with_for_update()
)
_MANY_BY_ADDRESS = (
    select(customer_emails.c.address, *_COLUMNS)
    .join(customer_emails, customer_emails.c.customer_id == customers.c.id)
    .where(customer_emails.c.address.in_(bindparam("addresses", expanding=True)))
    .order_by(customers.c.id)
    .with_for_update(of=customers)
)
_NEW_CUSTOMER = insert(customers).returning(*_COLUMNS)


@dataclass(frozen=True)
class Found:
    """A customer row as this transaction last saw or left it."""

    id: int
    name: str
    plan: str
    banned_at: datetime | None
    unreachable_at: datetime | None
    wants_new_ticket: bool
    language: str | None = None
    client_language: str | None = None


@dataclass
class CustomerRow:
    """The customer a message is from, as the rest of the intake needs them."""

    id: int
    name: str
    plan: str
    banned: bool
    locale: str = ENGLISH  # what they read: picked, else their client's, else English


def sender_key(ref: CustomerRef) -> SenderKey:
    """How a batch knows a sender: their Telegram id, else their address in lower case."""
    if ref.telegram_id is not None:
        return ("telegram", str(ref.telegram_id))
    return ("email", (ref.email or "").strip().lower())


async def load_senders(
    connection: AsyncConnection, refs: Iterable[CustomerRef]
) -> dict[SenderKey, Found | None]:
    """Every sender of a batch, read and locked at once; None for one not (yet) a customer."""
    keys = {sender_key(ref) for ref in refs}
    found: dict[SenderKey, Found | None] = dict.fromkeys(keys)
    telegram_ids = sorted(int(value) for kind, value in keys if kind == "telegram")
    addresses = sorted(value for kind, value in keys if kind == "email")
    if telegram_ids:
        rows = await connection.execute(_MANY_BY_TELEGRAM, {"telegram_ids": telegram_ids})
        for row in rows:
            found["telegram", str(row.telegram_id)] = _found(row)
    if addresses:
        rows = await connection.execute(_MANY_BY_ADDRESS, {"addresses": addresses})
        for row in rows:
            found["email", row.address] = _found(row)
    return found


async def find_or_create(
    connection: AsyncConnection,
    ref: CustomerRef,
    at: datetime,
    *,
    wrote: bool,
    known: dict[SenderKey, Found | None] | None = None,
    plans: AccountPlans | None = None,
) -> tuple[CustomerRow, bool]:
    """The customer (locked, created if new, name kept current), and whether they had asked
    for a new ticket; `wrote` means a message arrives: that clears the request and the
    unreachable mark. `known` holds what the batch has read ahead, and is kept up to date.
    A customer made from an email address starts on the plan `plans` gives that address."""
    name = storable_text(ref.name)[:NAME_LIMIT]
    key = sender_key(ref)
    if known is not None and key in known:
        found = known[key] or await _create(connection, ref, key, name, at, plans)
    else:
        found = await _look_up(connection, ref, key) or await _create(
            connection, ref, key, name, at, plans
        )
    changes: dict[str, Any] = {}
    if name and found.name != name:
        changes["name"] = name
    writing = wrote and found.banned_at is None
    if writing and found.unreachable_at is not None:
        changes["unreachable_at"] = None
    if ref.language is not None and found.client_language != ref.language:
        changes["client_language"] = ref.language
    wanted_new = found.wants_new_ticket and writing
    if wanted_new:
        changes["wants_new_ticket"] = False
    if changes:
        await connection.execute(
            update(customers).where(customers.c.id == found.id).values(changes)
        )
        found = replace(found, **changes)
    if known is not None:
        known[key] = found
    customer = CustomerRow(
        id=found.id,
        name=found.name,
        plan=found.plan,
        banned=found.banned_at is not None,
        locale=choose(found.language, found.client_language),
    )
    return customer, wanted_new


async def _look_up(connection: AsyncConnection, ref: CustomerRef, key: SenderKey) -> Found | None:
    if ref.telegram_id is not None:
        row = (await connection.execute(_BY_TELEGRAM, {"telegram_id": ref.telegram_id})).first()
    else:
        row = (await connection.execute(_BY_ADDRESS, {"address": key[1]})).first()
    return _found(row) if row is not None else None


async def _create(
    connection: AsyncConnection,
    ref: CustomerRef,
    key: SenderKey,
    name: str,
    at: datetime,
    plans: AccountPlans | None,
) -> Found:
    """A new customer; if another transaction registers the same person first, theirs."""
    plan = Plan.BASIC.value
    if ref.telegram_id is None and plans is not None:
        plan = await plans.plan_of_address(connection, key[1]) or plan
    values = {"name": name, "plan": plan, "created_at": at, "wants_new_ticket": False}
    insert_customer, insert_address = _inserts(connection.dialect.name)
    if ref.telegram_id is not None:
        # Insert-if-absent (no sequence value is spent on known customers), so a first message
        # racing another from the same person still ends with one customer.
        row = (
            await connection.execute(insert_customer, {**values, "telegram_id": ref.telegram_id})
        ).first()
        if row is None:
            row = (await connection.execute(_BY_TELEGRAM, {"telegram_id": ref.telegram_id})).one()
        return _found(row)
    fresh = (await connection.execute(_NEW_CUSTOMER, values)).one()
    won = (
        await connection.execute(insert_address, {"customer_id": fresh.id, "address": key[1]})
    ).scalar()
    if won is not None:
        return _found(fresh)
    # Another transaction registered the address first.
    await connection.execute(delete(customers).where(customers.c.id == fresh.id))
    return _found((await connection.execute(_BY_ADDRESS, {"address": key[1]})).one())


@cache
def _inserts(dialect: str) -> tuple[Insert, Insert]:
    """The insert-if-absent statements of a new customer, built once per dialect."""
    return (
        insert_ignoring(dialect, customers).returning(*_COLUMNS),
        insert_ignoring(dialect, customer_emails).returning(customer_emails.c.id),
    )


def _found(row: Any) -> Found:
    return Found(
        id=row.id,
        name=row.name,
        plan=row.plan,
        banned_at=row.banned_at,
        unreachable_at=row.unreachable_at,
        wants_new_ticket=bool(row.wants_new_ticket),
        language=row.language,
        client_language=row.client_language,
    )


_LANGUAGES = select(customers.c.language, customers.c.client_language).where(
    customers.c.id == bindparam("customer_id")
)


async def locale_of(connection: AsyncConnection, customer_id: int | None) -> str:
    """The locale a customer reads: the one they picked, else their client's, else English."""
    if customer_id is None:
        return ENGLISH
    row = (await connection.execute(_LANGUAGES, {"customer_id": customer_id})).first()
    return ENGLISH if row is None else choose(row.language, row.client_language)
