"""Account import files read without a database: bad rows named by line, JSON lines, exact sums."""

from __future__ import annotations

import pytest

from accounts.records import ImportRefused, check_records, read_csv, read_json

BAD_ROWS = [
    ("payment,P9,A1,topup,abc,1,USDT,tron,W,T,2026-11-20T09:00:00Z", "not an amount"),
    ("payment,P9,A1,topup,1.0000001,1,USDT,tron,W,T,2026-11-20T09:00:00Z", "more than 6"),
    ("payment,P9,A1,topup,-5,1,USDT,tron,W,T,2026-11-20T09:00:00Z", "more than zero"),
    ("payment,P9,A1,topup,0,1,USDT,tron,W,T,2026-11-20T09:00:00Z", "more than zero"),
    ("payment,P9,A1,refund,5,1,USDT,tron,W,T,2026-11-20T09:00:00Z", "purpose must be"),
    ("payment,P9,A1,topup,5,1,USDT,tron,W,T,yesterday", "not an ISO 8601 time"),
    ("payment,P9,A1,topup,5,-1,USDT,tron,W,T,2026-11-20T09:00:00Z", "crypto_amount"),
    ("payment,P9,A1,topup,5,1,USDT,tron,,T,2026-11-20T09:00:00Z", "wallet is missing"),
    ("payment,,A1,topup,5,1,USDT,tron,W,T,2026-11-20T09:00:00Z", "id is missing"),
    ("refund,P9,A1,topup,5,1,USDT,tron,W,T,2026-11-20T09:00:00Z", "type must be"),
]


HEADER = "type,id,account,purpose,amount_usd,crypto_amount,currency,chain,wallet,tx_hash,paid_at\n"


GOOD = "payment,P8,A1,topup,5,5,USDT,tron,W,T,2026-11-20T09:00:00Z\n"


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_bad_rows_are_named_by_line(row: str, problem: str) -> None:
    text = HEADER + GOOD + row + "\n"
    with pytest.raises(ImportRefused) as refused:
        check_records(read_csv(text), "x.csv")
    [found] = refused.value.problems
    assert found.line == 3 and problem in found.message, found


def test_json_floats_are_exact_and_checked_by_line() -> None:
    text = (
        '[\n{"type": "usage", "id": "U1", "account": "A", "amount_usd": 0.1,\n'
        ' "at": "2026-11-01"},\n'
        '{"type": "usage", "id": "U2", "account": "A", "amount_usd": 0.1234567, "at": "2026-11-01"}'
        "\n]"
    )
    with pytest.raises(ImportRefused) as refused:
        check_records(read_json(text), "x.json")
    [found] = refused.value.problems
    assert found.line == 4 and "more than 6 decimal places" in found.message


def test_json_lines_are_read_too() -> None:
    text = (
        '{"type": "account", "id": "A", "email": "a@example.com"}\n'
        '{"type": "account", "id": "B", "email": "b@example.com"}\n'
    )
    batch = check_records(read_json(text), "x.jsonl")
    assert [a.line for a in batch.accounts] == [1, 2]


def test_duplicate_ids_with_different_content_are_refused() -> None:
    text = HEADER + GOOD + GOOD + GOOD.replace(",5,5,", ",6,6,")
    with pytest.raises(ImportRefused) as refused:
        check_records(read_csv(text), "x.csv")
    [found] = refused.value.problems
    assert found.line == 4 and "also on line 2 with different content" in found.message
