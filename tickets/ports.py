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
