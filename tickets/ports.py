"""Ports the core needs from the outside world."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Renderer(Protocol):
    """Renders a named template (see `templates/`) to text."""

    def render(self, template_name: str, /, **context: Any) -> str: ...


class AccountPlans(Protocol):
    """The plan of the account an email address belongs to: where a new customer starts."""

    async def plan_of_address(self, connection: AsyncConnection, address: str) -> str | None: ...
