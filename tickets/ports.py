"""Ports the core needs from the outside world."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Renderer(Protocol):
    """Renders a named template (see `templates/`) to text."""

    def render(self, template_name: str, /, **context: Any) -> str: ...
