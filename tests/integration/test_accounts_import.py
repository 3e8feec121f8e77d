"""Account import: CSV and JSON exports, idempotent re-imports, bad rows refused whole."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from accounts.importer import import_file
from accounts.ledger import balance
from accounts.ledger_billing import LedgerBilling
from accounts.records import ImportRefused
from accounts.tables import Account, LedgerEntry, Payment
from tests import helpers
from tests.conftest import START, Database
from tests.unit.test_accounts_import_rows import HEADER

COLUMNS = (
    "type,id,email,plan,pro_since,account,purpose,amount_usd,crypto_amount,currency,chain,"
    "wallet,tx_hash,paid_at,at,note"
)
CSV = f"""{COLUMNS}
account,A1,Ann@Example.com,pro,2026-11-20T10:00:00Z,,,,,,,,,,,
account,A2,bob@example.org,basic,,,,,,,,,,,,
payment,P1,,,,A1,topup,50.00,50,USDT,tron,TWalletAnn1,0xaaa,2026-11-20T09:00:00Z,,
payment,P2,,,,A1,pro_upgrade,19,0.00031,BTC,bitcoin,bc1qann,0xbbb,2026-11-20T10:00:00Z,,
payment,P3,,,,A2,topup,10.5,10.5,USDC,ethereum,0xBobWallet,0xccc,2026-11-22T12:00:00Z,,
usage,U1,,,,A1,,1.250001,,,,,,,2026-11-23T08:00:00Z,API calls
usage,U2,,,,A2,,0.5,,,,,,,2026-11-23T09:00:00Z,
"""

JSON = """[
  {"type": "account", "id": "A1", "email": "ann@example.com", "plan": "pro",
   "pro_since": "2026-11-20T10:00:00Z"},
  {"type": "account", "id": "A2", "email": "bob@example.org"},
  {"type": "payment", "id": "P1", "account": "A1", "amount_usd": "50.00", "crypto_amount": "50",
   "currency": "USDT", "chain": "tron", "wallet": "TWalletAnn1", "tx_hash": "0xaaa",
   "paid_at": "2026-11-20T09:00:00Z"},
  {"type": "payment", "id": "P2", "account": "A1", "purpose": "pro_upgrade", "amount_usd": 19,
   "crypto_amount": "0.00031", "currency": "BTC", "chain": "bitcoin", "wallet": "bc1qann",
   "tx_hash": "0xbbb", "paid_at": "2026-11-20T10:00:00Z"},
  {"type": "payment", "id": "P3", "account": "A2", "amount_usd": 10.5, "crypto_amount": "10.5",
   "currency": "USDC", "chain": "ethereum", "wallet": "0xBobWallet", "tx_hash": "0xccc",
   "paid_at": "2026-11-22T12:00:00Z"},
  {"type": "usage", "id": "U1", "account": "A1", "amount_usd": "1.250001",
   "at": "2026-11-23T08:00:00Z", "note": "API calls"},
  {"type": "usage", "id": "U2", "account": "A2", "amount_usd": "0.5", "at": "2026-11-23T09:00:00Z"}
]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def counts(database: Database) -> tuple[int, int, int]:
    async with database.sessions() as session:
        return (
            int(await session.scalar(select(func.count()).select_from(Account)) or 0),
            int(await session.scalar(select(func.count()).select_from(Payment)) or 0),
            int(await session.scalar(select(func.count()).select_from(LedgerEntry)) or 0),
        )


async def balances(database: Database) -> dict[str, Decimal]:
    async with database.sessions() as session:
        accounts = (await session.scalars(select(Account).order_by(Account.email))).all()
        return {a.email: await balance(session, a.id) for a in accounts}


@pytest.mark.parametrize(("name", "text"), [("export.csv", CSV), ("export.json", JSON)])
async def test_import_loads_accounts_payments_and_usage(
    database: Database, tmp_path: Path, name: str, text: str
) -> None:
    report = await import_file(database.sessions, write(tmp_path, name, text), at=START)
    assert (report.accounts_created, report.payments_added, report.usage_added) == (2, 3, 2)
    # The Pro upgrade is a payment but not balance: only top-ups and usage are ledger entries.
    assert await counts(database) == (2, 3, 4)
    assert await balances(database) == {
        "ann@example.com": Decimal("48.749999"),
        "bob@example.org": Decimal("10.000000"),
    }
    summary = await LedgerBilling(database.sessions).lookup("ann@example.com", START)
    assert summary is not None
    assert summary.plan == "pro" and summary.month_spend == Decimal("1.250001")
    assert [p.wallet for p in summary.payments] == ["bc1qann", "TWalletAnn1"]
    [entry] = [a for a in await helpers.audit(database) if a.action == "accounts_import"]
    assert entry.actor == "cli" and entry.details["payments_added"] == 3


@pytest.mark.parametrize(("name", "text"), [("export.csv", CSV), ("export.json", JSON)])
async def test_reimport_changes_nothing(
    database: Database, tmp_path: Path, name: str, text: str
) -> None:
    path = write(tmp_path, name, text)
    await import_file(database.sessions, path, at=START)
    before = (await counts(database), await balances(database))
    again = await import_file(database.sessions, path, at=START)
    assert not again.changed and again.unchanged == 7
    assert (await counts(database), await balances(database)) == before


async def test_same_export_in_both_formats_is_the_same_data(
    database: Database, tmp_path: Path
) -> None:
    await import_file(database.sessions, write(tmp_path, "a.csv", CSV), at=START)
    again = await import_file(database.sessions, write(tmp_path, "a.json", JSON), at=START)
    assert not again.changed


async def test_account_rows_update_plan_and_email(database: Database, tmp_path: Path) -> None:
    await import_file(database.sessions, write(tmp_path, "a.csv", CSV), at=START)
    later = "type,id,email,plan\naccount,A2,bob@new.example.org,pro\n"
    report = await import_file(database.sessions, write(tmp_path, "b.csv", later), at=START)
    assert report.accounts_updated == 1
    async with database.sessions() as session:
        bob = (await session.scalars(select(Account).where(Account.external_id == "A2"))).one()
    assert (bob.email, bob.plan) == ("bob@new.example.org", "pro")


async def test_a_bad_row_applies_nothing(database: Database, tmp_path: Path) -> None:
    await import_file(database.sessions, write(tmp_path, "a.csv", CSV), at=START)
    before = (await counts(database), await balances(database))
    # Good rows around one whose payment was already imported with another amount, and one for
    # an account nobody knows: both are reported by line, and neither good row is applied.
    text = (
        HEADER
        + "payment,P7,A1,topup,5,5,USDT,tron,W,T,2026-11-24T09:00:00Z\n"
        + "payment,P1,A1,topup,51,50,USDT,tron,TWalletAnn1,0xaaa,2026-11-20T09:00:00Z\n"
        + "payment,P8,NOPE,topup,5,5,USDT,tron,W,T,2026-11-24T09:00:00Z\n"
    )
    with pytest.raises(ImportRefused) as refused:
        await import_file(database.sessions, write(tmp_path, "b.csv", text), at=START)
    assert [(p.line, "different content" in p.message) for p in refused.value.problems] == [
        (3, True),
        (4, False),
    ]
    assert "neither in the database nor in this file" in refused.value.problems[1].message
    assert "nothing was imported" in str(refused.value)
    assert (await counts(database), await balances(database)) == before
    assert [a.action for a in await helpers.audit(database)] == ["accounts_import"]


async def test_an_address_of_another_account_is_refused(database: Database, tmp_path: Path) -> None:
    await import_file(database.sessions, write(tmp_path, "a.csv", CSV), at=START)
    text = "type,id,email\naccount,A3,bob@example.org\n"
    with pytest.raises(ImportRefused, match=r"line 2: email bob@example\.org already belongs"):
        await import_file(database.sessions, write(tmp_path, "b.csv", text), at=START)
    assert (await counts(database))[0] == 2


async def imported(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(CSV, encoding="utf-8")
    await import_file(database.sessions, path, at=START)
