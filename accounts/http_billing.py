"""The HTTP adapter of the Billing port: a billing service that speaks docs/billing-api.md.

Every request carries `Authorization: Bearer <BILLING_TOKEN>` and has `BILLING_TIMEOUT_SECONDS`
to finish. Reads that fail on the way (no connection, a timeout, 429, a 5xx) are tried again
`BILLING_RETRIES` times with a short backoff, then give up with `BillingUnavailable`; an answer
that is not in the contract's shape is `BillingMalformed` at once, naming the field, and nothing
is done with it. Writes are not retried here: they are outbox rows (`record`), delivered one by
one by the outbox worker (`send`) with its own backoff, each with the desk's `Idempotency-Key`,
so a retry after a lost answer is applied once by the billing service.

Money is exact decimal text (numbers are read as decimals, never floats); times are ISO 8601.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.billing import (
    AccountSummary,
    BillingMalformed,
    BillingUnavailable,
    BillingWrite,
    MonthSpend,
    MonthSpends,
    PaymentLine,
    WriteKind,
)
from accounts.money import MoneyError, money
from tickets.model import OutboxKind, Route
from tickets.months import Month
from tickets.outbox import Delivered, Failed, OneByOne, OutboxItem, Outcome, RetryLater
from tickets.payloads import BillingKind, enqueue

log = logging.getLogger(__name__)

API = "/v1"
PAGE = 500
RETRY_BASE = 0.2
WRITE_PATHS = {
    WriteKind.REFUND: "refunds",
    WriteKind.DOWNGRADE: "downgrade",
    WriteKind.CREDIT: "credits",
}
WRITE_KINDS: dict[WriteKind, BillingKind] = {
    WriteKind.REFUND: OutboxKind.BILLING_REFUND,
    WriteKind.DOWNGRADE: OutboxKind.BILLING_DOWNGRADE,
    WriteKind.CREDIT: OutboxKind.BILLING_CREDIT,
}
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpBillingConfig:
    """Where the billing service is and how to talk to it (BILLING_* settings)."""

    url: str
    token: str = field(repr=False)
    timeout: float = 5.0
    retries: int = 2


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


def enqueue_write(session: AsyncSession, write: BillingWrite) -> None:
    """Queue a write for a remote billing system in the caller's transaction."""
    enqueue(
        session,
        route=Route.BILLING,
        recipient=write.account_ref or write.email,
        kind=WRITE_KINDS[write.kind],
        payload=write.to_json(),
        at=write.at,
        ticket_id=write.ticket_id,
    )


def write_sender(send: Callable[[BillingWrite], Awaitable[Outcome]]) -> OneByOne:
    """The outbox's `billing` route: each queued write handed to the adapter's `send`."""

    async def deliver(item: OutboxItem) -> Outcome:
        try:
            write = BillingWrite.from_json(dict(item.payload))
        except (KeyError, TypeError, ValueError, MoneyError) as error:
            return Failed(f"the queued billing write cannot be read: {error}")
        return await send(write)

    return OneByOne(deliver)


class HttpBilling:
    """A billing service over HTTP (see the module docstring and docs/billing-api.md)."""

    local = False

    def __init__(
        self, config: HttpBillingConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._client = httpx.AsyncClient(
            base_url=config.url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {config.token}",
                "Accept": "application/json",
                "User-Agent": "supportbot",
            },
            timeout=httpx.Timeout(config.timeout),
            transport=transport,
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    # -- reads ------------------------------------------------------------------------------

    async def lookup(
        self,
        email: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """`GET /v1/accounts?email=…`: the account with this address, or None (404)."""
        params = {"email": email.strip().lower(), "month": str(month or Month.of(now))}
        body = await self._get(f"{API}/accounts", params)
        return None if body is None else account_summary(body)

    async def lookup_account(
        self,
        ref: str,
        now: datetime,
        *,
        month: Month | None = None,
        session: AsyncSession | None = None,
    ) -> AccountSummary | None:
        """`GET /v1/accounts/{id}`: the account with this id, or None (404)."""
        params = {"month": str(month or Month.of(now))}
        body = await self._get(f"{API}/accounts/{quote(ref, safe='')}", params)
        return None if body is None else account_summary(body)

    async def history(
        self, summary: AccountSummary, covering: Decimal, *, session: AsyncSession | None = None
    ) -> tuple[PaymentLine, ...]:
        """`GET /v1/accounts/{id}/payments?purpose=topup`, page by page, newest first, until
        the top-ups cover `covering`."""
        if summary.ref is None:
            raise BillingMalformed("account.id: missing, so its payments cannot be asked for")
        found: list[PaymentLine] = []
        total = Decimal(0)
        cursor: str | None = None
        path = f"{API}/accounts/{quote(summary.ref, safe='')}/payments"
        while total < covering:
            params = {"purpose": "topup", "limit": str(PAGE)}
            if cursor:
                params["before"] = cursor
            body = await self._get(path, params)
            if body is None:
                raise BillingMalformed(f"payments of {summary.ref}: 404 for a known account")
            page = _list(body, "payments", "payments")
            for index, raw in enumerate(page):
                line = payment_line(raw, f"payments[{index}]")
                found.append(line)
                total += line.amount_usd
            cursor = _optional_text(body, "next", "payments")
            if not cursor or not page:
                break
        return tuple(found)

    async def month_spends(self, month: Month, now: datetime) -> MonthSpends:
        """`GET /v1/months/{YYYY-MM}`, page by page: the month's Pro accounts and net spends,
        and whether the billing service counts the month's data as final."""
        accounts: list[MonthSpend] = []
        cursor: str | None = None
        complete = False
        as_of: datetime | None = None
        while True:
            params = {"limit": str(PAGE)}
            if cursor:
                params["after"] = cursor
            body = await self._get(f"{API}/months/{month}", params)
            if body is None:
                return MonthSpends(month, False, None, ())  # nothing known of the month yet
            complete = _bool(body, "complete", "month")
            as_of = _moment(body, "as_of", "month")
            for index, raw in enumerate(_list(body, "pro_accounts", "month")):
                where = f"month.pro_accounts[{index}]"
                item = _object(raw, where)
                accounts.append(
                    MonthSpend(
                        email=_text(item, "email", where).lower(),
                        net_spend=max(Decimal(0), _amount(item, "net_spend", where)),
                        ref=_text(item, "id", where),
                        pro_since=_optional_moment(item, "pro_since", where),
                    )
                )
            cursor = _optional_text(body, "next", "month")
            if not cursor:
                break
        return MonthSpends(month, complete, as_of, tuple(accounts))

    async def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        """A read, tried again on failures on the way; None for 404."""
        attempts = self.config.retries + 1
        reason = ""
        for attempt in range(attempts):
            try:
                return await self._get_once(path, params)
            except _Retry as retry:
                reason = str(retry)
                if attempt + 1 < attempts:
                    await asyncio.sleep(retry.after or RETRY_BASE * 2**attempt)
        raise BillingUnavailable(f"the billing service did not answer: {reason}")

    async def _get_once(self, path: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        try:
            response = await self._client.get(path, params=params)
        except httpx.TimeoutException:
            raise _Retry(f"no answer within {self.config.timeout:g} s") from None
        except httpx.HTTPError as error:
            raise _Retry(f"{type(error).__name__}: {error}") from None
        if response.status_code == 404:
            return None
        if response.status_code in _RETRYABLE:
            raise _Retry(f"HTTP {response.status_code}", _retry_after(response))
        if response.status_code in (401, 403):
            raise BillingUnavailable(
                f"the billing service refused our token (HTTP {response.status_code}): "
                "check BILLING_TOKEN"
            )
        if response.status_code != 200:
            raise BillingUnavailable(f"the billing service answered HTTP {response.status_code}")
        return _json_object(response)

    # -- writes -----------------------------------------------------------------------------

    async def record(self, session: AsyncSession, write: BillingWrite) -> int | None:
        """Queue the write in the outbox, in the caller's transaction."""
        enqueue_write(session, write)
        return None

    async def send(self, write: BillingWrite) -> Outcome:
        """POST one write with its idempotency key; the outcome tells the outbox what to do."""
        if not write.account_ref:
            return Failed(f"{write.email} has no billing account id: the write cannot be sent")
        path = f"{API}/accounts/{quote(write.account_ref, safe='')}/{WRITE_PATHS[write.kind]}"
        try:
            response = await self._client.post(
                path, json=write_body(write), headers={"Idempotency-Key": write.key}
            )
        except httpx.TimeoutException:
            return RetryLater(f"billing: no answer within {self.config.timeout:g} s")
        except httpx.HTTPError as error:
            return RetryLater(f"billing: {type(error).__name__}: {error}")
        return _write_outcome(write, response)


def _write_outcome(write: BillingWrite, response: httpx.Response) -> Outcome:
    """What an answer to a write means for its outbox row."""
    status = response.status_code
    if status in (200, 201):
        try:
            body = _json_object(response)
            return Delivered(external_id=_text(body, "id", "write"))
        except BillingMalformed as error:
            # It may well have been applied: the same key again will say so, and once only.
            return RetryLater(f"billing: malformed answer to the {write.kind} write: {error}")
    detail = _error_text(response)
    if status in _RETRYABLE or status in (401, 403):
        return RetryLater(f"billing: HTTP {status} {detail}".strip(), _retry_after(response))
    if status == 409:
        return Failed(f"billing: the key {write.key} was used before with other content: {detail}")
    return Failed(f"billing refused the {write.kind} write: HTTP {status} {detail}".strip())


def write_body(write: BillingWrite) -> dict[str, Any]:
    """The JSON body of a write, as docs/billing-api.md defines it."""
    if write.kind is WriteKind.REFUND:
        return {
            "refund_id": write.refund_id,
            "debit": str(write.amount),
            "payouts": [
                {
                    "payment_id": p.payment_ref,
                    "purpose": p.purpose,
                    "amount_usd": str(p.amount),
                    "currency": p.currency,
                    "chain": p.chain,
                    "wallet": p.wallet,
                }
                for p in write.payouts
            ],
            "reason": write.reason,
            "at": write.at.isoformat(),
        }
    if write.kind is WriteKind.DOWNGRADE:
        return {"refund_id": write.refund_id, "reason": write.reason, "at": write.at.isoformat()}
    return {
        "month": write.month,
        "amount": str(write.amount),
        "net_spend": None if write.net_spend is None else str(write.net_spend),
        "uptime": write.uptime,
        "at": write.at.isoformat(),
    }


# -- reading the contract's JSON ------------------------------------------------------------------


def account_summary(body: Mapping[str, Any]) -> AccountSummary:
    """An account as the contract gives it, checked field by field."""
    where = "account"
    plan = _text(body, "plan", where)
    if plan not in ("basic", "pro"):
        raise BillingMalformed(f"account.plan: expected basic or pro, got {plan!r}")
    payments = tuple(
        payment_line(raw, f"account.payments[{index}]")
        for index, raw in enumerate(_list(body, "payments", where))
    )
    return AccountSummary(
        email=_text(body, "email", where).lower(),
        plan=plan,
        pro_since=_optional_moment(body, "pro_since", where),
        balance=_amount(body, "balance", where),
        month_spend=max(Decimal(0), _amount(body, "month_net_spend", where)),
        payments=tuple(sorted(payments, key=lambda p: p.paid_at, reverse=True)),
        ref=_text(body, "id", where),
        pro_limits_used=_bool(body, "pro_limits_used_since_upgrade", where),
        as_of=_moment(body, "as_of", where),
        month=_text(body, "month", where),
    )


def payment_line(raw: Any, where: str) -> PaymentLine:
    """One payment of the contract."""
    item = _object(raw, where)
    purpose = _text(item, "purpose", where)
    if purpose not in ("topup", "pro_upgrade"):
        raise BillingMalformed(f"{where}.purpose: expected topup or pro_upgrade, got {purpose!r}")
    return PaymentLine(
        paid_at=_moment(item, "paid_at", where),
        purpose=purpose,
        amount_usd=_amount(item, "amount_usd", where),
        crypto_amount=_text(item, "crypto_amount", where),
        currency=_text(item, "currency", where).upper(),
        chain=_text(item, "chain", where).lower(),
        wallet=_text(item, "wallet", where),
        tx_hash=_text(item, "tx_hash", where),
        ref=_text(item, "id", where),
    )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = json.loads(response.content, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BillingMalformed(f"the answer is not JSON ({error})") from None
    return _object(value, "the answer")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BillingMalformed(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(body: Mapping[str, Any], name: str, where: str) -> Sequence[Any]:
    value = body.get(name)
    if not isinstance(value, list):
        raise BillingMalformed(f"{where}.{name}: expected a list, got {value!r}"[:200])
    return value


def _text(body: Mapping[str, Any], name: str, where: str) -> str:
    value = body.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and name == "id":
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise BillingMalformed(f"{where}.{name}: expected text, got {value!r}"[:200])
    return value.strip()


def _optional_text(body: Mapping[str, Any], name: str, where: str) -> str | None:
    return None if body.get(name) is None else _text(body, name, where)


def _bool(body: Mapping[str, Any], name: str, where: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise BillingMalformed(f"{where}.{name}: expected true or false, got {value!r}"[:200])
    return value


def _amount(body: Mapping[str, Any], name: str, where: str) -> Decimal:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise BillingMalformed(f"{where}.{name}: expected a decimal amount, got {value!r}"[:200])
    try:
        return money(value)
    except MoneyError as error:
        raise BillingMalformed(f"{where}.{name}: {error}") from None


def _moment(body: Mapping[str, Any], name: str, where: str) -> datetime:
    found = _optional_moment(body, name, where)
    if found is None:
        raise BillingMalformed(f"{where}.{name}: missing")
    return found


def _optional_moment(body: Mapping[str, Any], name: str, where: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BillingMalformed(f"{where}.{name}: expected an ISO 8601 time, got {value!r}"[:200])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BillingMalformed(f"{where}.{name}: not an ISO 8601 time: {value!r}"[:200]) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "")
    try:
        return min(max(float(raw), 0.0), 600.0)
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    """The contract's `{"error": "..."}`, or the start of whatever came back."""
    try:
        body = json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:200]
    return response.text[:200]
