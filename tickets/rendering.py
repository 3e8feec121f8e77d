"""Jinja2 rendering of `templates/`: every customer- and agent-facing text lives there.

A core service: the shell builds one `Templates` and hands it to the channels and the desk, so no
channel reaches up into the shell for its texts. The wheel ships `templates/` as
`tickets/_templates`, next to this module.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from tickets import languages
from tickets.errors import SupportbotError
from tickets.languages import when

__all__ = ["Templates", "default_directory", "hours", "when"]


def default_directory() -> Path:
    """The templates shipped in the wheel, or the checkout's `templates/` in development."""
    packaged = Path(__file__).with_name("_templates")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "templates"


def hours(value: float) -> str:
    return f"{value:g}"


class Templates:
    """Renders `NAME.txt` from the templates directory in a locale, failing loudly on a missing
    variable; the texts marked for translation come from the locale's catalog."""

    def __init__(self, directory: Path | None = None, *, default_locale: str = "en") -> None:
        self.directory = directory or default_directory()
        if default_locale not in languages.LOCALES:
            raise SupportbotError(
                f"no {default_locale!r} locale; shipped: {', '.join(languages.LOCALES)}"
            )
        self.default_locale = default_locale  # the agents' language (AGENT_LANGUAGE)
        self._loader = FileSystemLoader(self.directory)
        self._envs: dict[str, Environment] = {}

    def environment(self, locale: str) -> Environment:
        """One Jinja environment per locale, built on first use with that locale's catalog."""
        env = self._envs.get(locale)
        if env is None:
            env = Environment(
                loader=self._loader,
                undefined=StrictUndefined,
                autoescape=False,  # noqa: S701 - plain text; each channel escapes for its own markup
                keep_trailing_newline=False,
                auto_reload=False,  # templates are read once; restart to pick up edits
                extensions=["jinja2.ext.i18n"],
            )
            env.install_gettext_translations(  # type: ignore[attr-defined]
                languages.translations(self.directory, locale), newstyle=True
            )
            env.filters["when"] = partial(when, locale=locale)
            env.filters["usd"] = partial(languages.usd, locale=locale)
            env.filters["hours"] = hours
            env.globals["locale"] = locale
            # what joins two sentences translated apart: Chinese sets none after 。 or before （
            env.globals["gap"] = "" if locale.startswith("zh") else " "
            self._envs[locale] = env
        return env

    def render(self, template_name: str, /, *, locale: str | None = None, **context: Any) -> str:
        """The text of one template; `locale` is the reader's (a customer's), else the agents'."""
        env = self.environment(languages.choose(locale, self.default_locale))
        try:
            template = env.get_template(f"{template_name}.txt")
        except TemplateNotFound:
            raise SupportbotError(
                f"template {template_name}.txt is missing from {self.directory}"
            ) from None
        return template.render(**context).strip()
