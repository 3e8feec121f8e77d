"""Jinja2 rendering of `templates/`: every customer- and agent-facing text lives there.

A core service: the shell builds one `Templates` and hands it to the channels and the desk, so no
channel reaches up into the shell for its texts. The wheel ships `templates/` as
`tickets/_templates`, next to this module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from tickets.errors import SupportbotError


def default_directory() -> Path:
    """The templates shipped in the wheel, or the checkout's `templates/` in development."""
    packaged = Path(__file__).with_name("_templates")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "templates"


def when(value: datetime | str | None) -> str:
    """A due time as customers and agents read it: `Mon 30 Nov 2026, 20:00 UTC`."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%a %d %b %Y, %H:%M UTC")


def hours(value: float) -> str:
    return f"{value:g}"


class Templates:
    """Renders `NAME.txt` from the templates directory, failing loudly on a missing variable."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_directory()
        self._env = Environment(
            loader=FileSystemLoader(self.directory),
            undefined=StrictUndefined,
            autoescape=False,  # noqa: S701 - plain text; each channel escapes for its own markup
            keep_trailing_newline=False,
            auto_reload=False,  # templates are read once; restart to pick up edits
        )
        self._env.filters["when"] = when
        self._env.filters["hours"] = hours

    def render(self, template_name: str, /, **context: Any) -> str:
        try:
            template = self._env.get_template(f"{template_name}.txt")
        except TemplateNotFound:
            raise SupportbotError(
                f"template {template_name}.txt is missing from {self.directory}"
            ) from None
        return template.render(**context).strip()
