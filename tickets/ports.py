"""Ports the core needs from the outside world."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tickets.model import Attachment

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Renderer(Protocol):
    """Renders a named template (see `templates/`) to text."""

    def render(
        self, template_name: str, /, *, locale: str | None = None, **context: Any
    ) -> str: ...


class AccountPlans(Protocol):
    """The plan of the account an email address belongs to: where a new customer starts."""

    async def plan_of_address(self, connection: AsyncConnection, address: str) -> str | None: ...


@dataclass(frozen=True)
class FileData:
    """An attachment's bytes, as a `FileSource` hands them over."""

    filename: str
    mime_type: str
    data: bytes


FileSource = Callable[[Attachment], Awaitable[FileData]]
"""Fetches the bytes of an agent's attachment (e.g. a Telegram file) for another channel: the
shell hands the Telegram channel's downloader to the mail sender, so neither imports the other."""


class Events(Protocol):
    """Where the desk and its channels report what happened, for the operator's metrics.

    The shell implements it with Prometheus counters and gauges; the core and the channels only
    name the event, so none of them imports a metrics library.
    """

    def count(self, event: str, /, amount: float = 1.0, **labels: str) -> None:
        """Something happened `amount` times (a delivery, a 429, a message taken in)."""

    def measure(self, reading: str, value: float, /, **labels: str) -> None:
        """The latest value of a reading (IMAP lag, connection state)."""


class NoEvents:
    """Events that go nowhere: the default when nobody watches."""

    def count(self, event: str, /, amount: float = 1.0, **labels: str) -> None:
        return None

    def measure(self, reading: str, value: float, /, **labels: str) -> None:
        return None


NO_EVENTS: Events = NoEvents()

# The events the product reports (the shell's metrics map each to one Prometheus family).
INTAKE = "intake"  # labels: channel — a customer message taken in (not a duplicate)
DELIVERED = "delivered"  # labels: route — an outbox row went out
DELIVERY_FAILED = "delivery_failed"  # labels: route, final ("yes"/"no": given up, or retried)
TELEGRAM_429 = "telegram_429"  # a 429 Too Many Requests answered by the Bot API
IMAP_LAG = "imap_lag_seconds"  # reading: from a mail's arrival in the mailbox to its ticket
IMAP_CONNECTED = "imap_connected"  # reading: 1 while the IMAP reader holds a connection
