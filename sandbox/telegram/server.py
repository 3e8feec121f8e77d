"""The local Bot API server: Telegram's HTTP protocol on a loopback port, plus scripted people.

python-telegram-bot (or any Bot API client) talks to it exactly as to api.telegram.org::

    async with LocalBotApi(token="123456:TEST", bot_username="supportbot_test") as server:
        app = (
            ApplicationBuilder()
            .token(server.token)
            .base_url(server.base_url)
            .base_file_url(server.base_file_url)
            .build()
        )
        ann = server.add_user("Ann", username="ann")
        await server.user_sends(ann, text="hello")

Requests go to ``POST /bot<token>/<method>``; files are downloaded from
``GET /file/bot<token>/<file_path>``.  Method names are case-insensitive, as on Telegram.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any

import telegram
from aiohttp import web

from .chat import CHAT_METHODS
from .errors import ApiError, not_found, unauthorized
from .inspection import Inspection
from .limits import RateLimiter, RateLimits
from .media import MAX_UPLOAD_BYTES
from .messages import MESSAGE_METHODS
from .models import SimUser
from .params import Params, read_params
from .people import ChatRef, ScriptedPeople, chat_id_of
from .webhook import WebhookStats, push_updates
from .world import World

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456:LOCAL-TEST-TOKEN"  # noqa: S105 - a fake token for a local fake server
_TOKEN_RE = re.compile(r"(\d+):[\w-]+")
METHODS = {**CHAT_METHODS, **MESSAGE_METHODS}
_BY_LOWER_NAME = {name.lower(): name for name in METHODS}


@dataclass
class _Failure:
    method: str
    status: int
    remaining: int
    chat_id: int | None
    description: str | None
    retry_after: int
    delay: float
    executed: bool
    skip: int = 0

    def error(self) -> ApiError:
        """The error this failure answers with."""
        if self.status == HTTPStatus.TOO_MANY_REQUESTS:
            return ApiError(
                self.status,
                self.description or f"Too Many Requests: retry after {self.retry_after}",
                {"retry_after": self.retry_after},
            )
        prefixes = {400: "Bad Request: injected failure", 403: "Forbidden: injected failure"}
        default = prefixes.get(self.status) or _phrase(self.status)
        return ApiError(self.status, self.description or default)


@dataclass
class _Hold:
    method: str
    chat_id: int | None
    remaining: int
    seconds: float
    answer: bool = False  # hold the answer (the call is carried out at once), not the arrival


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Error {status}"


class LocalBotApi(ScriptedPeople, Inspection):
    """A local Telegram Bot API server for one bot, with scripted users, groups and topics."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "supportbot_test",
        bot_name: str = "Support Bot",
        limits: RateLimits | None = None,
        privacy_mode: bool = True,
    ) -> None:
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            raise ValueError("a bot token looks like '123456:secret'")
        self.token = token
        self.bot = SimUser(
            id=int(match.group(1)),
            first_name=bot_name,
            username=bot_username,
            language_code=None,
            is_bot=True,
        )
        self.limits = limits if limits is not None else RateLimits.telegram()
        self._world = World(self.bot, self.limits, privacy_mode=privacy_mode)
        self._failures: list[_Failure] = []
        self._holds: list[_Hold] = []
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self._url: str | None = None
        self.webhook_stats = WebhookStats()
        self._pusher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving on ``host``; ``port=0`` picks a free port (see :attr:`url`)."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._world.closing = False
        self._runner, self._socket = runner, sock
        bound_host, bound_port = sock.getsockname()[:2]
        self._url = f"http://{bound_host}:{bound_port}"
        self._pusher = asyncio.create_task(push_updates(self._world, self.webhook_stats))

    async def stop(self) -> None:
        """Stop serving; pending long polls return at once."""
        self._world.closing = True
        if self._pusher is not None:  # ends at `closing`; cancelled too, before the notify
            self._pusher.cancel()
        self._world.updates_signal.notify()
        if self._pusher is not None:
            await asyncio.gather(self._pusher, return_exceptions=True)
            self._pusher = None
        if self._runner is not None:
            await self._runner.cleanup()
        if self._socket is not None:
            self._socket.close()
        self._runner = self._socket = None
        self._url = None

    async def __aenter__(self) -> LocalBotApi:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` while running."""
        if self._url is None:
            raise RuntimeError("the server is not running; await start() first")
        return self._url

    @property
    def base_url(self) -> str:
        """What to pass to ``ApplicationBuilder.base_url`` / ``Bot(base_url=...)``."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """What to pass to ``ApplicationBuilder.base_file_url`` / ``Bot(base_file_url=...)``."""
        return f"{self.url}/file/bot"

    def make_bot(self) -> telegram.Bot:
        """Return a python-telegram-bot ``Bot`` pointed at this server (not yet initialized)."""
        return telegram.Bot(self.token, base_url=self.base_url, base_file_url=self.base_file_url)

    def set_limits(self, limits: RateLimits) -> None:
        """Switch flood limits (forgetting what was sent so far)."""
        self.limits = limits
        self._world.limiter = RateLimiter(limits)

    # -- fault injection ---------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 502,
        times: int = 1,
        chat_id: ChatRef | None = None,
        description: str | None = None,
        retry_after: int = 1,
        delay: float = 0.0,
        executed: bool = False,
        skip: int = 0,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (``"*"`` for any) with an error.

        ``chat_id`` restricts it to calls for that chat.  ``delay`` waits before answering
        (to trigger client timeouts).  ``executed=True`` performs the call and only then
        answers with the error: the "sent, but the response was lost" case.  ``skip`` lets that
        many matching calls through first (the second part of a long message, say).
        """
        name = "*" if method == "*" else _BY_LOWER_NAME.get(method.lower())
        if name is None:
            raise ValueError(f"unknown Bot API method {method!r}")
        if times < 1 or status < 400:
            raise ValueError("times must be >= 1 and status an HTTP error status")
        self._failures.append(
            _Failure(
                method=name,
                status=status,
                remaining=times,
                chat_id=chat_id_of(chat_id) if chat_id is not None else None,
                description=description,
                retry_after=retry_after,
                delay=delay,
                executed=executed,
                skip=skip,
            )
        )

    def hold_next(
        self, method: str, *, seconds: float, times: int = 1, chat_id: ChatRef | None = None
    ) -> None:
        """Make the next ``times`` calls of ``method`` (``"*"`` for any) arrive ``seconds`` late.

        A held call is handled, and counted against the flood limits, only once it arrives, as
        on a slow network path between the bot and Telegram. ``chat_id`` restricts it to calls
        for that chat.
        """
        self._hold(method, seconds, times, chat_id, answer=False)

    def hold_answer_next(
        self, method: str, *, seconds: float, times: int = 1, chat_id: ChatRef | None = None
    ) -> None:
        """Carry out the next ``times`` calls of ``method`` at once, but answer ``seconds`` late.

        With ``seconds`` beyond the client's read timeout this is the "sent, but no answer in
        time" case: the message is delivered, and the client cannot know it.
        """
        self._hold(method, seconds, times, chat_id, answer=True)

    def _hold(
        self, method: str, seconds: float, times: int, chat_id: ChatRef | None, *, answer: bool
    ) -> None:
        name = "*" if method == "*" else _BY_LOWER_NAME.get(method.lower())
        if name is None:
            raise ValueError(f"unknown Bot API method {method!r}")
        if times < 1 or seconds < 0:
            raise ValueError("times must be >= 1 and seconds >= 0")
        chat = chat_id_of(chat_id) if chat_id is not None else None
        self._holds.append(
            _Hold(method=name, chat_id=chat, remaining=times, seconds=seconds, answer=answer)
        )

    def clear_faults(self) -> None:
        """Forget the failures and holds set up with ``fail_next`` and ``hold_next``."""
        self._failures.clear()
        self._holds.clear()

    def _matches(self, wanted: str, chat_id: int | None, method: str, params: Params) -> bool:
        if wanted not in ("*", method):
            return False
        return chat_id is None or self._request_chat(params) == chat_id

    def _take_hold(self, method: str, params: Params, *, answer: bool = False) -> float:
        for hold in self._holds:
            if hold.answer == answer and self._matches(hold.method, hold.chat_id, method, params):
                hold.remaining -= 1
                if hold.remaining == 0:
                    self._holds.remove(hold)
                return hold.seconds
        return 0.0

    def _take_failure(self, method: str, params: Params) -> _Failure | None:
        for failure in self._failures:
            if not self._matches(failure.method, failure.chat_id, method, params):
                continue
            if failure.skip:
                failure.skip -= 1
                return None
            failure.remaining -= 1
            if failure.remaining == 0:
                self._failures.remove(failure)
            self._world.stats.injected_failures += 1
            return failure
        return None

    def _request_chat(self, params: Params) -> int | None:
        try:
            ref = params.get_chat_ref()
            return ref if isinstance(ref, int) or ref is None else self._world.resolve(ref).chat.id
        except ApiError:
            return None

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        method = _BY_LOWER_NAME.get(name.lower())
        stats = self._world.stats
        stats.requests[method or name] += 1
        try:
            if request.match_info["token"] != self.token:
                raise unauthorized()
            if method is None:
                raise not_found()
            params = await read_params(request)
            result = await self._call(method, params)
            status, body = 200, {"ok": True, "result": result}
        except ApiError as error:
            status, body = error.status, error.body()
        except Exception:
            logger.exception("local Bot API failed on %s", method)
            status = 500
            body = {"ok": False, "error_code": 500, "description": "Internal Server Error"}
        finally:
            self._world.changed()
        stats.responses[status] += 1
        return web.json_response(body, status=status)

    async def _call(self, method: str, params: Params) -> Any:
        if held := self._take_hold(method, params):
            self._world.stats.held_requests += 1
            await asyncio.sleep(held)
        failure = self._take_failure(method, params)
        if failure is None:
            result = await METHODS[method](self._world, params)
            if late := self._take_hold(method, params, answer=True):
                self._world.stats.late_answers += 1
                await asyncio.sleep(late)
            return result
        if failure.delay:
            await asyncio.sleep(failure.delay)
        if failure.executed:
            await METHODS[method](self._world, params)
        if failure.status == HTTPStatus.TOO_MANY_REQUESTS:
            self._count_injected_429(params)
        raise failure.error()

    def _count_injected_429(self, params: Params) -> None:
        # Flood-control refusals are counted by the world; injected ones are counted here.
        stats = self._world.stats
        stats.too_many_requests_total += 1
        chat_id = self._request_chat(params)
        if chat_id is not None:
            stats.too_many_requests_by_chat[chat_id] += 1

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        self._world.stats.requests["<file>"] += 1
        if request.match_info["token"] != self.token:
            return self._error_response(unauthorized())
        stored = self._world.files.by_path(request.match_info["path"])
        if stored is None:
            return self._error_response(not_found())
        self._world.stats.responses[200] += 1
        return web.Response(
            body=stored.data, content_type=stored.mime_type or "application/octet-stream"
        )

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return self._error_response(not_found())

    def _error_response(self, error: ApiError) -> web.Response:
        self._world.stats.responses[error.status] += 1
        return web.json_response(error.body(), status=error.status)
