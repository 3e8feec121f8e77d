"""A reference billing service of docs/billing-api.md, in aiohttp, with faults on demand.

It keeps accounts, their payments and months in memory, checks the bearer token, applies writes
once per idempotency key (the same key and body again: the first answer, replayed; another body:
409), and records every request with the route template it matched, so tests can hold the
adapter and this server to the OpenAPI file. `fail(...)` queues faults for the next requests:
a status, a delay longer than the client waits, a malformed body, or a write applied whose
answer is then lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

TOKEN = "billing-test-token"


@dataclass
class Fault:
    """What the next matching request gets instead of a good answer."""

    status: int | None = None  # answer with this status (and a JSON error)
    delay: float = 0.0  # wait this long first
    body: bytes | None = None  # answer 200 with these bytes
    lost_answer: bool = False  # apply a write, then answer 500 as if the answer was lost
    path: str = ""  # only requests whose path contains this


@dataclass
class Seen:
    """One request as the server got it."""

    method: str
    template: str  # the route's path template, e.g. /v1/accounts/{account_id}
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0
    answer: Any = None


@dataclass
class BillingAccount:
    id: str
    email: str
    plan: str = "basic"
    pro_since: str | None = None
    limits_used: bool = False
    balance: Decimal = Decimal(0)
    spends: dict[str, Decimal] = field(default_factory=dict)
    payments: list[dict[str, Any]] = field(default_factory=list)


class BillingServer:
    """The contract's reference server on a loopback port."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self.accounts: dict[str, BillingAccount] = {}
        self.months: dict[str, dict[str, Any]] = {}
        self.applied: list[tuple[str, str, dict[str, Any]]] = []  # (kind, account, body)
        self.keys: dict[str, tuple[str, Any, dict[str, Any]]] = {}  # key -> (route, body, answer)
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.as_of: datetime | None = None  # None: always "now"
        self.clock = clock or (lambda: datetime.now(UTC))
        self.page = 500
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- set-up -------------------------------------------------------------------------------

    def account(self, account_id: str, email: str, **values: Any) -> BillingAccount:
        found = BillingAccount(account_id, email, **values)
        self.accounts[account_id] = found
        return found

    def payment(self, account_id: str, payment_id: str, amount: str, paid_at: datetime,
                *, purpose: str = "topup", wallet: str = "TWallet") -> None:  # fmt: skip
        self.accounts[account_id].payments.append(
            {
                "id": payment_id,
                "purpose": purpose,
                "amount_usd": amount,
                "crypto_amount": amount,
                "currency": "USDT" if purpose == "topup" else "BTC",
                "chain": "tron" if purpose == "topup" else "bitcoin",
                "wallet": wallet,
                "tx_hash": f"0x{payment_id}",
                "paid_at": paid_at.isoformat(),
            }
        )
        if purpose == "topup":
            self.accounts[account_id].balance += Decimal(amount)

    def fail(self, *faults: Fault) -> None:
        """Queue faults for the next requests (in order)."""
        self.faults.extend(faults)

    def calls(self, method: str, template: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.template == template]

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(
            [
                web.get("/v1/accounts", self._find),
                web.get("/v1/accounts/{account_id}", self._get),
                web.get("/v1/accounts/{account_id}/payments", self._payments),
                web.get("/v1/months/{month}", self._month),
                web.post("/v1/accounts/{account_id}/refunds", self._write),
                web.post("/v1/accounts/{account_id}/downgrade", self._write),
                web.post("/v1/accounts/{account_id}/credits", self._write),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        template = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        )
        seen = Seen(
            request.method, template, request.path, dict(request.query), dict(request.headers), body
        )
        self.seen.append(seen)
        fault = next((f for f in self.faults if f.path in request.path), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                seen.status = fault.status
                return web.json_response({"error": "injected fault"}, status=fault.status)
            if fault.body is not None:
                seen.status = 200
                return web.Response(body=fault.body, content_type="application/json")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            seen.status = 401
            return web.json_response({"error": "bad token"}, status=401)
        response: web.StreamResponse = await handler(request)
        seen.status = response.status
        if isinstance(response, web.Response) and response.body is not None:
            seen.answer = json.loads(bytes(response.body))  # type: ignore[arg-type]
        if fault is not None and fault.lost_answer:
            seen.status = 500
            return web.json_response({"error": "the answer was lost"}, status=500)
        return response

    # -- reads --------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return (self.as_of or self.clock()).isoformat()

    def _account_json(self, account: BillingAccount, month: str) -> dict[str, Any]:
        payments = sorted(account.payments, key=lambda p: p["paid_at"], reverse=True)
        return {
            "id": account.id,
            "email": account.email,
            "plan": account.plan,
            "pro_since": account.pro_since,
            "pro_limits_used_since_upgrade": account.limits_used,
            "balance": f"{account.balance:.6f}",
            "month": month,
            "month_net_spend": f"{account.spends.get(month, Decimal(0)):.6f}",
            "payments": payments,
            "as_of": self._stamp(),
        }

    def _month_of(self, request: web.Request) -> str:
        return request.query.get("month") or self.clock().strftime("%Y-%m")

    async def _find(self, request: web.Request) -> web.Response:
        email = request.query.get("email", "")
        for account in self.accounts.values():
            if account.email == email:
                return web.json_response(self._account_json(account, self._month_of(request)))
        return web.json_response({"error": f"no account {email}"}, status=404)

    async def _get(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.match_info["account_id"])
        if account is None:
            return web.json_response({"error": "no such account"}, status=404)
        return web.json_response(self._account_json(account, self._month_of(request)))

    async def _payments(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.match_info["account_id"])
        if account is None:
            return web.json_response({"error": "no such account"}, status=404)
        purpose = request.query.get("purpose")
        rows = [
            p
            for p in sorted(account.payments, key=lambda p: p["paid_at"], reverse=True)
            if purpose is None or p["purpose"] == purpose
        ]
        start = int(request.query.get("before") or 0)
        limit = min(int(request.query.get("limit") or self.page), self.page)
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        return web.json_response({"payments": page, "next": str(start + limit) if more else None})

    async def _month(self, request: web.Request) -> web.Response:
        month = request.match_info["month"]
        state = self.months.get(month)
        if state is None:
            return web.json_response({"error": f"nothing known of {month}"}, status=404)
        pro = [
            {
                "id": a.id,
                "email": a.email,
                "pro_since": a.pro_since,
                "net_spend": f"{a.spends.get(month, Decimal(0)):.6f}",
            }
            for a in self.accounts.values()
            if a.plan == "pro"
        ]
        start = int(request.query.get("after") or 0)
        limit = min(int(request.query.get("limit") or self.page), self.page)
        more = start + limit < len(pro)
        return web.json_response(
            {
                "month": month,
                "complete": bool(state.get("complete")),
                "as_of": self._stamp(),
                "pro_accounts": pro[start : start + limit],
                "next": str(start + limit) if more else None,
            }
        )

    # -- writes -------------------------------------------------------------------------------

    async def _write(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return web.json_response({"error": "Idempotency-Key is required"}, status=422)
        body = await request.json()
        route = request.path
        earlier = self.keys.get(key)
        if earlier is not None:
            if earlier[0] != route or earlier[1] != body:
                return web.json_response(
                    {"error": "this key was used with another request"}, status=409
                )
            return web.json_response(
                earlier[2], status=200, headers={"Idempotent-Replayed": "true"}
            )
        account = self.accounts.get(request.match_info["account_id"])
        if account is None:
            return web.json_response({"error": "no such account"}, status=404)
        kind = route.rsplit("/", 1)[1]
        if kind == "refunds":
            account.balance -= Decimal(body["debit"])
        elif kind == "downgrade":
            account.plan = "basic"
        else:
            account.balance += Decimal(body["amount"])
        self.applied.append((kind, account.id, body))
        answer = {"id": f"{kind}-{len(self.applied)}", "applied_at": self.clock().isoformat()}
        self.keys[key] = (route, body, answer)
        return web.json_response(answer, status=201)
