"""Webhook mode: any replica takes Telegram's updates; the replica leading Telegram handles them.

Telegram POSTs each update to `TELEGRAM_WEBHOOK_URL`, behind which any number of replicas may
stand. Each checks the secret of `X-Telegram-Bot-Api-Secret-Token` on every call (missing: 401,
wrong: 403), keeps the update in the inbox (`tickets.inbox`, deduplicated by `update_id`, one
transaction) and only then answers 200; a database it cannot reach answers 503, so Telegram
tries again and nothing is lost. Handling an update talks to Telegram, so it is left to the
replica that leads TELEGRAM (`KeptUpdates`): Telegram's limits stay one budget.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from aiohttp import web
from sqlalchemy.exc import DBAPIError
from telegram import Update

from bot.polling import Poller
from bot.settings import WebhookSettings
from tickets.inbox import Inbox, Kept
from tickets.periodic import sleep_until_stopped

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
# How often the leader looks for updates kept by any replica.
READ_EVERY = 0.2


class WebhookServer:
    """The aiohttp app Telegram calls: check the secret, keep the update, answer 200."""

    def __init__(self, settings: WebhookSettings, inbox: Inbox) -> None:
        self._settings = settings
        self._inbox = inbox
        self.taken = 0  # updates kept (new or again), for tests and metrics
        self.refused = 0
        self.url: str | None = None  # where it listens, once started

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self._settings.path, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        """One call from Telegram."""
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            self.refused += 1
            return web.Response(status=401, text="the secret token header is missing")
        if not hmac.compare_digest(given.encode(), self._settings.secret.encode()):
            self.refused += 1
            return web.Response(status=403, text="wrong secret token")
        try:
            payload = await request.json()
        except ValueError:
            return web.Response(status=400, text="not JSON")
        update_id = payload.get("update_id") if isinstance(payload, dict) else None
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            return web.Response(status=400, text="no update_id")
        try:
            await self._inbox.keep([Kept(update_id, payload)])
        except (DBAPIError, OSError) as error:
            log.warning(
                "telegram webhook: update %s not kept: %s; Telegram retries", update_id, error
            )
            return web.Response(status=503, text="try again")
        self.taken += 1
        return web.Response(text="ok")

    async def serve(self, stop: asyncio.Event) -> None:
        """Listen on the settings' address until `stop`."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._settings.host, self._settings.port)
        await site.start()
        self.url = f"http://{self._settings.host}:{self._settings.port}{self._settings.path}"
        log.info("telegram webhook: listening on %s:%s", self._settings.host, self._settings.port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


class KeptUpdates(Poller):
    """The leader's intake in webhook mode: hands out what any replica kept, in order per lane,
    and forgets an update once handled (Telegram was told it arrived when it got its 200)."""

    async def _recover(self, stop: asyncio.Event) -> None:
        return None  # `_poll` reads everything kept, old and new

    async def _poll(self, stop: asyncio.Event) -> None:
        handed: set[int] = set()
        backoff = 1.0
        while not stop.is_set():
            try:
                await self._wait_for_room(stop)
                await self._forget_handled(handed)
                for event in await self._inbox.pending():
                    if event.seq in handed:
                        continue
                    update = Update.de_json(event.payload, self._bot)
                    if update is not None:
                        handed.add(event.seq)
                        self._dispatch(update)
                backoff = 1.0
                await sleep_until_stopped(stop, READ_EVERY)
            except (DBAPIError, OSError) as error:
                log.warning("telegram intake: reading kept updates: %s; retrying", error)
                await sleep_until_stopped(stop, backoff)
                backoff = min(backoff * 2, 60.0)

    async def _forget_handled(self, handed: set[int]) -> None:
        done = list(self._handled)
        if not done:
            return
        await self._inbox.keep((), done)
        self._handled = [i for i in self._handled if i not in set(done)]
        handed.difference_update(done)

    async def _finish(self) -> None:
        await super()._finish()  # lanes finish the update in hand (no offset to confirm)
        try:
            await self._inbox.keep((), self._handled)
        except (DBAPIError, OSError) as error:
            log.warning("telegram intake: could not forget the last handled updates: %s", error)
