"""The HTTP billing adapter against the contract's reference server, faults included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from accounts.billing import (
    BillingMalformed,
    BillingUnavailable,
    BillingWrite,
    PayoutLine,
    WriteKind,
)
from accounts.http_billing import HttpBilling, HttpBillingConfig, write_body
from tests.billing_server import TOKEN, BillingServer, Fault
from tickets.months import Month
from tickets.outbox import Delivered, Failed, RetryLater

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "billing-api.yaml"


@pytest.fixture
async def server() -> AsyncIterator[BillingServer]:
    found = BillingServer(clock=lambda: NOW)
    pia = found.account(
        "A1", "pia.pro@example.com", plan="pro", pro_since="2026-11-20T10:00:00+00:00",
        spends={"2026-11": Decimal("1.250001")},
    )  # fmt: skip
    found.payment("A1", "P1", "50.00", NOW - timedelta(days=4), wallet="TWalletPia")
    found.payment("A1", "P2", "19", NOW - timedelta(days=4), purpose="pro_upgrade", wallet="bc1q")
    found.payment("A1", "P0", "30", NOW - timedelta(days=40), wallet="TOldWallet")
    pia.balance -= Decimal("31.250001")  # the old top-up was spent long ago
    found.months["2026-10"] = {"complete": True}
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


def adapter(server: BillingServer, **config: Any) -> HttpBilling:
    return HttpBilling(HttpBillingConfig(server.url, TOKEN, **{"timeout": 0.5, **config}))


def credit(key: str = "sla-credit:2026-10:1", amount: str = "0.012500") -> BillingWrite:
    return BillingWrite(
        kind=WriteKind.CREDIT,
        key=key,
        account_id=1,
        account_ref="A1",
        email="pia.pro@example.com",
        at=NOW,
        amount=Decimal(amount),
        month="2026-10",
        net_spend=Decimal("1.25"),
        uptime="99.1",
    )


async def test_a_lookup_reads_the_contract_exactly_with_the_bearer_token(
    server: BillingServer,
) -> None:
    billing = adapter(server)
    try:
        found = await billing.lookup("Pia.Pro@example.com", NOW)
        by_id = await billing.lookup_account("A1", NOW)
        nobody = await billing.lookup("nobody@example.com", NOW)
    finally:
        await billing.close()
    assert found is not None and by_id == found and nobody is None
    assert (found.email, found.plan, found.ref) == ("pia.pro@example.com", "pro", "A1")
    assert found.balance == Decimal("48.749999") and found.month_spend == Decimal("1.250001")
    assert found.as_of == NOW and found.month == "2026-11" and not found.pro_limits_used
    assert [p.ref for p in found.payments] == ["P1", "P2", "P0"] or [
        p.ref for p in found.payments
    ] == ["P2", "P1", "P0"]
    assert {p.ref: p.wallet for p in found.payments}["P1"] == "TWalletPia"
    [first, *_] = server.seen
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.query == {"email": "pia.pro@example.com", "month": "2026-11"}


async def test_a_wrong_token_is_one_clear_refusal(server: BillingServer) -> None:
    billing = HttpBilling(HttpBillingConfig(server.url, "wrong-token", timeout=0.5, retries=2))
    try:
        with pytest.raises(BillingUnavailable, match=r"refused our token \(HTTP 401\)"):
            await billing.lookup("pia.pro@example.com", NOW)
    finally:
        await billing.close()
    assert len(server.seen) == 1, "a bad token is not retried"


async def test_reads_retry_5xx_and_timeouts_then_give_up_with_one_line(
    server: BillingServer,
) -> None:
    billing = adapter(server, retries=2)
    try:
        server.fail(Fault(status=503), Fault(delay=1.0))  # then the real answer
        assert await billing.lookup("pia.pro@example.com", NOW) is not None
        assert len(server.seen) == 3
        server.fail(Fault(status=500), Fault(status=502), Fault(status=429))
        with pytest.raises(BillingUnavailable, match=r"did not answer: HTTP 429"):
            await billing.lookup("pia.pro@example.com", NOW)
        server.fail(*(Fault(delay=1.0) for _ in range(3)))
        with pytest.raises(BillingUnavailable, match=r"no answer within 0.5 s"):
            await billing.lookup("pia.pro@example.com", NOW)
    finally:
        await billing.close()
    assert len(server.seen) == 9


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>Bad gateway</html>", "the answer is not JSON"),
        (b"[]", "the answer: expected an object, got list"),
        (
            json.dumps({"id": "A1", "email": "pia.pro@example.com", "plan": "gold"}).encode(),
            "account.plan: expected basic or pro, got 'gold'",
        ),
        (
            b'{"id": "A1", "email": "a@b.c", "plan": "pro", "payments": [], "balance": 1.1234567}',
            "account.balance: more than 6 decimal places",
        ),
        (
            b'{"id": "A1", "email": "a@b.c", "plan": "pro", "payments": [], "balance": "1",'
            b' "month_net_spend": "0", "pro_limits_used_since_upgrade": "no"}',
            "account.pro_limits_used_since_upgrade: expected true or false",
        ),
    ],
)
async def test_a_malformed_answer_is_refused_naming_what_is_wrong(
    server: BillingServer, body: bytes, problem: str
) -> None:
    billing = adapter(server)
    server.fail(Fault(body=body))
    try:
        with pytest.raises(BillingMalformed) as refused:
            await billing.lookup("pia.pro@example.com", NOW)
    finally:
        await billing.close()
    assert problem in str(refused.value)
    assert len(server.seen) == 1, "a malformed answer is not asked for again"


async def test_history_and_months_page_through(server: BillingServer) -> None:
    server.page = 1
    server.account("A2", "ann@example.com", plan="pro", spends={"2026-10": Decimal("12")})
    billing = adapter(server)
    try:
        summary = await billing.lookup_account("A1", NOW)
        assert summary is not None
        history = await billing.history(summary, Decimal("60"))
        october = await billing.month_spends(Month(2026, 10), NOW)
        unknown = await billing.month_spends(Month(2026, 11), NOW)
    finally:
        await billing.close()
    assert [p.ref for p in history] == ["P1", "P0"], "top-ups only, newest first, until covered"
    assert october.complete and october.as_of == NOW
    assert [(a.ref, a.net_spend) for a in october.accounts] == [
        ("A1", Decimal(0)),
        ("A2", Decimal(12)),
    ]
    assert not unknown.complete and unknown.accounts == ()


async def test_a_write_is_applied_once_whatever_happens_on_the_way(server: BillingServer) -> None:
    billing = adapter(server)
    try:
        server.fail(Fault(status=503, path="/credits"))
        assert isinstance(await billing.send(credit()), RetryLater)
        server.fail(Fault(lost_answer=True, path="/credits"))  # applied, the answer lost
        assert isinstance(await billing.send(credit()), RetryLater)
        server.fail(Fault(delay=1.0, path="/credits"))
        assert isinstance(await billing.send(credit()), RetryLater)  # a timeout
        server.fail(Fault(body=b"{", path="/credits"))
        assert isinstance(await billing.send(credit()), RetryLater)  # a malformed answer
        done = await billing.send(credit())  # the same key: the first answer again
        assert done == Delivered(external_id="credits-1")
        changed = await billing.send(credit(amount="0.5"))  # the same key, another body
        assert isinstance(changed, Failed) and "was used before with other content" in changed.error
        server.fail(Fault(status=422, path="/credits"))
        refused = await billing.send(credit(key="another"))
        assert isinstance(refused, Failed) and "HTTP 422" in refused.error
        no_account = await billing.send(
            BillingWrite(kind=WriteKind.DOWNGRADE, key="d", account_id=1, email="x@y.z", at=NOW)
        )
        assert isinstance(no_account, Failed) and "no billing account id" in no_account.error
    finally:
        await billing.close()
    assert [kind for kind, _account, _body in server.applied] == ["credits"]
    assert server.accounts["A1"].balance == Decimal("48.762499")
    keys = {
        s.headers["Idempotency-Key"]
        for s in server.calls("POST", "/v1/accounts/{account_id}/credits")
    }
    assert keys == {"sla-credit:2026-10:1", "another"}


# -- the contract's file --------------------------------------------------------------------------


def _contract() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    return loaded


def _resolve(schema: dict[str, Any], contract: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = contract
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def conforms(value: Any, schema: dict[str, Any], contract: dict[str, Any], where: str) -> None:
    """A cheap check of JSON against an OpenAPI schema: required fields, types, enums."""
    schema = _resolve(schema, contract)
    if value is None:
        parts = [schema, *(_resolve(s, contract) for s in schema.get("allOf", []))]
        assert any(p.get("nullable") for p in parts), f"{where}: null where the contract has none"
        return
    if "oneOf" in schema:
        _one_of(value, schema["oneOf"], contract, where)
        return
    for part in schema.get("allOf", []):
        conforms(value, part, contract, where)
    _of_type(value, schema, where)
    if schema.get("type") == "object":
        for name in schema.get("required", []):
            assert name in value, f"{where}: {name} is required"
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                conforms(value[name], sub, contract, f"{where}.{name}")
    if schema.get("type") == "array":
        for index, item in enumerate(value):
            conforms(item, schema.get("items", {}), contract, f"{where}[{index}]")


def _one_of(value: Any, options: list[Any], contract: dict[str, Any], where: str) -> None:
    problems = []
    for option in options:
        try:
            conforms(value, option, contract, where)
        except AssertionError as error:
            problems.append(str(error))
        else:
            return
    raise AssertionError(f"{where}: matches none of {problems}")


def _of_type(value: Any, schema: dict[str, Any], where: str) -> None:
    kind = schema.get("type")
    python: dict[str, Any] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": int | float,
    }
    if kind in python:
        assert isinstance(value, python[kind]), f"{where}: {value!r} is not {kind}"
        assert kind == "boolean" or not isinstance(value, bool), f"{where}: {value!r} is a bool"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"


async def test_the_adapter_and_the_reference_server_agree_with_the_openapi_file(
    server: BillingServer,
) -> None:
    contract = _contract()
    billing = adapter(server)
    refund = BillingWrite(
        kind=WriteKind.REFUND,
        key="refund:1:abc:debit",
        account_id=1,
        account_ref="A1",
        email="pia.pro@example.com",
        at=NOW,
        amount=Decimal("35"),
        refund_id=1,
        payouts=(PayoutLine(1, "P1", "topup", Decimal("35"), "USDT", "tron", "TWalletPia"),),
    )
    try:
        summary = await billing.lookup("pia.pro@example.com", NOW)
        assert summary is not None
        await billing.lookup_account("A1", NOW)
        await billing.history(summary, Decimal("100"))
        await billing.month_spends(Month(2026, 10), NOW)
        for write in (refund, credit(), BillingWrite(
            kind=WriteKind.DOWNGRADE, key="refund:1:abc:downgrade", account_id=1,
            account_ref="A1", email="pia.pro@example.com", at=NOW, refund_id=1,
        )):  # fmt: skip
            assert isinstance(await billing.send(write), Delivered)
            conforms(write_body(write), _body_schema(contract, write), contract, write.kind)
    finally:
        await billing.close()
    paths = contract["paths"]
    used = {(s.method.lower(), s.template) for s in server.seen}
    assert used == {
        ("get", "/v1/accounts"),
        ("get", "/v1/accounts/{account_id}"),
        ("get", "/v1/accounts/{account_id}/payments"),
        ("get", "/v1/months/{month}"),
        ("post", "/v1/accounts/{account_id}/refunds"),
        ("post", "/v1/accounts/{account_id}/downgrade"),
        ("post", "/v1/accounts/{account_id}/credits"),
    }
    for method, template in used:
        assert method in paths.get(template, {}), f"{method.upper()} {template} is not in the file"
    for seen in server.seen:
        operation = paths[seen.template][seen.method.lower()]
        answer = operation["responses"][str(seen.status)]
        schema = _resolve(answer, contract)["content"]["application/json"]["schema"]
        conforms(seen.answer, schema, contract, f"{seen.method} {seen.path}")
        if seen.body is not None:
            body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
            conforms(seen.body, body_schema, contract, f"{seen.method} {seen.path} body")
        for declared in operation.get("parameters", []):
            parameter = _resolve(declared, contract)
            if parameter.get("required") and parameter["in"] == "header":
                assert parameter["name"] in seen.headers
            if parameter.get("required") and parameter["in"] == "query":
                assert parameter["name"] in seen.query
        assert set(seen.query) <= {
            _resolve(p, contract)["name"] for p in operation.get("parameters", [])
        }


def _body_schema(contract: dict[str, Any], write: BillingWrite) -> dict[str, Any]:
    name = {"refund": "RefundWrite", "downgrade": "DowngradeWrite", "credit": "CreditWrite"}
    schema: dict[str, Any] = contract["components"]["schemas"][name[write.kind.value]]
    return schema
