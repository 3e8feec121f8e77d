"""The languages customers read: which locales ship, how a client's language tag maps to one,
and the gettext catalogs behind them.

English is the source language of `templates/`; `templates/locales/<locale>/LC_MESSAGES/
messages.po` holds each other locale. The catalogs are compiled from the `.po` files in memory
when the templates are loaded (a few milliseconds), so a checkout, an editable install and the
wheel all need no build step and can never run with a stale `.mo`.
"""

from __future__ import annotations

import gettext
import io
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from babel.dates import format_datetime, format_skeleton, get_datetime_format
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import Translations

from tickets.errors import SupportbotError

ENGLISH = "en"
LOCALES = ("en", "ru", "zh_Hans", "es")
"""Every locale that ships, English (the templates' own language) first."""

NAMES = {"en": "English", "ru": "Русский", "zh_Hans": "简体中文", "es": "Español"}
"""Each locale in its own language, as the customer picks it."""

_PRIMARY = {"en": "en", "ru": "ru", "zh": "zh_Hans", "es": "es"}
# What a customer may type after /language besides a tag: the names above, and a few habits.
_WORDS = {name.casefold(): locale for locale, name in NAMES.items()} | {
    "english": "en",
    "russian": "ru",
    "chinese": "zh_Hans",
    "中文": "zh_Hans",
    "spanish": "es",
}


class CatalogError(SupportbotError):
    """A shipped `.po` file cannot be read: better to refuse to start than to mistranslate."""


def normalise(tag: str | None) -> str | None:
    """A client's language tag (`ru-RU`, `zh-hans`, `es-419`, `ru, en;q=0.8`) as a shipped
    locale, or None when none of its languages ships.

    Every Chinese tag maps to Simplified Chinese, traditional ones too: closer to the reader
    than the English fallback (docs/decisions.md, issue 16).
    """
    if not tag:
        return None
    for part in tag.split(","):
        word = part.split(";")[0].strip()
        if word in LOCALES:
            return word
        primary = word.replace("_", "-").split("-")[0].lower()
        if primary in _PRIMARY:
            return _PRIMARY[primary]
    return None


def parse_choice(text: str) -> str | None:
    """What a customer typed after /language as a shipped locale: a tag or a language's name."""
    word = text.strip()
    if not word or " " in word:
        return None
    return _WORDS.get(word.casefold()) or normalise(word)


def choose(*candidates: str | None) -> str:
    """The first shipped locale among the candidates (picked, then detected), else English."""
    for candidate in candidates:
        if candidate in LOCALES:
            return candidate
        found = normalise(candidate)
        if found is not None:
            return found
    return ENGLISH


def catalog_path(directory: Path, locale: str) -> Path:
    return directory / "locales" / locale / "LC_MESSAGES" / "messages.po"


def translations(directory: Path, locale: str) -> gettext.NullTranslations:
    """The compiled catalog of one locale (English: the templates' own text)."""
    if locale == ENGLISH:
        return gettext.NullTranslations()
    path = catalog_path(directory, locale)
    try:
        with path.open("rb") as source:
            catalog = read_po(source, locale=locale)
    except FileNotFoundError:
        raise CatalogError(f"the {locale} catalog is missing: {path}") from None
    except (ValueError, OSError) as error:
        raise CatalogError(f"the {locale} catalog cannot be read ({path}): {error}") from None
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out: English shows instead
    compiled.seek(0)
    return Translations(compiled)


def when(value: datetime | str | None, locale: str = ENGLISH) -> str:
    """A due time as the reader reads it: `Mon 30 Nov 2026, 20:00 UTC`, `пн, 30 нояб. 2026 г.,
    20:00 UTC`, always in UTC (the SLA is kept in UTC)."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.astimezone(UTC)
    if locale == ENGLISH:
        return moment.strftime("%a %d %b %Y, %H:%M UTC")
    day = format_skeleton("yMMMEd", moment, locale=locale)
    clock = format_datetime(moment, "HH:mm", tzinfo=UTC, locale=locale)
    pattern = str(get_datetime_format("medium", locale=locale))  # "{1}, {0}": date, then time
    return pattern.format(clock, day) + " UTC"


def usd(amount: Decimal | int | str, locale: str = ENGLISH) -> str:
    """A dollar amount in the reader's notation: `$1,234.50`, `1 234,50 $`, `US$1,234.50`;
    more places only when cents would lie."""
    value = Decimal(str(amount))
    exact = value == value.quantize(Decimal("0.01"))
    if locale == ENGLISH:
        sign = "-" if value < 0 else ""
        value = abs(value)
        text = f"{value:,.2f}" if exact else f"{value.normalize():,f}"
        return f"{sign}${text}"
    shown = value if exact else value.normalize()
    return format_currency(shown, "USD", locale=locale, decimal_quantization=exact)


def shipped(directory: Path) -> Iterable[str]:
    """The locales with a catalog in `directory` (a check for tests and the docs)."""
    return [loc for loc in LOCALES if loc == ENGLISH or catalog_path(directory, loc).is_file()]


def month_label(year: int, month: int, locale: str = ENGLISH) -> str:
    """A calendar month as the reader names it: `April 2026`, `апрель 2026 г.`, `2026年4月`."""
    first = date(year, month, 1)
    if locale == ENGLISH:
        return first.strftime("%B %Y")
    return format_skeleton("yMMMM", first, locale=locale)


_PLACEHOLDER_RE = re.compile(r"%\((\w+)\)s")


def template_messages(directory: Path) -> dict[str, tuple[str, ...]]:
    """Every text marked for translation in the templates (msgid → its plural msgids too),
    found the way `pybabel extract` finds them."""
    found: dict[str, tuple[str, ...]] = {}
    method_map = [("**.txt", "jinja2"), ("**.html", "jinja2")]
    for _file, _line, message, _comments, _context in extract_from_dir(str(directory), method_map):
        ids = (message,) if isinstance(message, str) else tuple(message)
        found[ids[0]] = ids
    return found


def placeholders(text: str) -> set[str]:
    """The `%(name)s` placeholders of a catalog text."""
    return set(_PLACEHOLDER_RE.findall(text))


def catalog_problems(directory: Path) -> list[str]:
    """What is wrong with the shipped catalogs: a text without a translation, a translation
    whose placeholders differ from the English, one that cannot be filled in, or a stale one."""
    problems: list[str] = []
    wanted = template_messages(directory)
    for locale in LOCALES:
        if locale == ENGLISH:
            continue
        path = catalog_path(directory, locale)
        if not path.is_file():
            problems.append(f"{locale}: no catalog at {path}")
            continue
        with path.open("rb") as source:
            catalog = read_po(source, locale=locale)
        for msgid, ids in wanted.items():
            entry = catalog.get(ids if len(ids) > 1 else msgid)
            if entry is None or entry.fuzzy:
                problems.append(f"{locale}: no translation of {msgid!r}")
                continue
            found = entry.string
            strings = tuple(found) if isinstance(found, (tuple, list)) else (found,)
            english = set().union(*(placeholders(i) for i in ids))
            for text in strings:
                if not text:
                    problems.append(f"{locale}: an empty translation of {msgid!r}")
                elif placeholders(text) != english:
                    problems.append(
                        f"{locale}: {msgid!r} has {sorted(english)} but the translation has "
                        f"{sorted(placeholders(text))}"
                    )
                else:
                    try:
                        text % dict.fromkeys(english, "x")
                    except (ValueError, TypeError) as error:
                        problems.append(f"{locale}: {msgid!r} cannot be filled in: {error}")
        stale = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
        problems.extend(
            f"{locale}: {msgid!r} is no longer in any template" for msgid in stale - set(wanted)
        )
    return problems


def decimal(value: Decimal | str, locale: str = ENGLISH) -> str:
    """A figure such as an uptime percentage in the reader's notation (`99,41` in Russian),
    every digit kept."""
    if locale == ENGLISH:
        return str(value)
    return format_decimal(Decimal(str(value)), locale=locale, decimal_quantization=False)
