"""Customers' languages: the shipped catalogs are complete and consistent, a client's language
tag maps to the right locale, and dates and money read as each locale writes them."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po

from mail.parse import parse_mail
from supportbot.settings import SettingsError, load_settings
from tickets import languages
from tickets.errors import SupportbotError
from tickets.languages import LOCALES, catalog_problems, choose, normalise, parse_choice
from tickets.rendering import Templates, default_directory

TEMPLATES = default_directory()
DUE = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)


def test_every_shipped_locale_translates_every_text_with_the_same_placeholders() -> None:
    assert catalog_problems(TEMPLATES) == []
    assert len(languages.template_messages(TEMPLATES)) > 60  # the customer texts are marked


def _copy_with(tmp_path: Path, locale: str, change: str) -> Path:
    """The templates with one locale's catalog broken in one way."""
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    path = languages.catalog_path(copy, locale)
    with path.open("rb") as source:
        catalog = read_po(source, locale=locale)
    receipt = "Thank you, we have your message. Your ticket number is #%(ticket)s."
    if change == "missing":
        catalog.delete(receipt)
    elif change == "placeholder":
        catalog[receipt].string = "Спасибо! Номер вашего обращения — #%(number)s."
    elif change == "empty":
        catalog[receipt].string = ""
    elif change == "stale":
        catalog.add("A text no template uses", "Текст")
    with path.open("wb") as target:
        write_po(target, catalog)
    return copy


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("missing", "ru: no translation of 'Thank you"),
        (
            "placeholder",
            "ru: 'Thank you, we have your message. Your ticket number is #%(ticket)s.'",
        ),
        ("empty", "ru: an empty translation of 'Thank you"),
        ("stale", "ru: 'A text no template uses' is no longer in any template"),
    ],
)
def test_the_check_catches_a_broken_catalog(tmp_path: Path, change: str, said: str) -> None:
    problems = catalog_problems(_copy_with(tmp_path, "ru", change))
    assert len(problems) == 1
    assert problems[0].startswith(said)


def test_a_missing_catalog_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    languages.catalog_path(copy, "es").unlink()
    assert any(p.startswith("es: no catalog") for p in catalog_problems(copy))
    with pytest.raises(languages.CatalogError, match="es catalog is missing"):
        Templates(copy).render("receipt", locale="es")


@pytest.mark.parametrize(
    ("tag", "locale"),
    [
        ("ru", "ru"),
        ("ru-RU", "ru"),
        ("RU", "ru"),
        ("zh-hans", "zh_Hans"),
        ("zh-CN", "zh_Hans"),
        ("zh_Hans", "zh_Hans"),
        ("zh-Hant-TW", "zh_Hans"),
        ("es-419", "es"),
        ("es_MX", "es"),
        ("en-GB", "en"),
        ("de, ru;q=0.8", "ru"),  # Content-Language may list several
        ("de", None),
        ("", None),
        (None, None),
        ("x" * 300, None),
    ],
)
def test_a_client_language_tag_maps_to_a_shipped_locale(tag: str | None, locale: str) -> None:
    assert normalise(tag) == locale


@pytest.mark.parametrize(
    ("typed", "locale"),
    [
        ("ru", "ru"),
        ("Русский", "ru"),
        ("zh", "zh_Hans"),
        ("简体中文", "zh_Hans"),
        ("es-419", "es"),
        ("spanish", "es"),
        ("EN", "en"),
        ("klingon", None),
        ("ru en", None),
        ("", None),
    ],
)
def test_what_a_customer_types_after_language(typed: str, locale: str | None) -> None:
    assert parse_choice(typed) == locale


def test_the_pick_wins_then_the_client_then_english() -> None:
    assert choose("es", "ru") == "es"
    assert choose(None, "ru-RU") == "ru"
    assert choose(None, "de", None) == "en"
    assert choose("bogus", "zh-CN") == "zh_Hans"


@pytest.mark.parametrize(
    ("locale", "due", "money"),
    [
        ("en", "Mon 30 Nov 2026, 20:00 UTC", "$1,234.50"),
        ("ru", "пн, 30 нояб. 2026\u202fг., 20:00 UTC", "1\xa0234,50\xa0$"),
        ("zh_Hans", "2026年11月30日周一 20:00 UTC", "US$1,234.50"),
        ("es", "lun, 30 nov 2026, 20:00 UTC", "1.234,50\xa0US$"),
    ],
)
def test_dates_and_money_read_as_the_locale_writes_them(locale: str, due: str, money: str) -> None:
    assert languages.when(DUE, locale) == due
    assert languages.usd(Decimal("1234.50"), locale) == money
    assert languages.usd(Decimal("-0.000100"), "en") == "-$0.0001"


def test_the_receipt_in_each_locale() -> None:
    templates = Templates()
    texts = {
        locale: templates.render(
            "receipt",
            locale=locale,
            ticket=42,
            due_at=DUE,
            reopened=False,
            response_hours=24.0,
        )
        for locale in LOCALES
    }
    assert texts["en"].startswith("Thank you, we have your message. Your ticket number is #42.")
    assert texts["ru"].startswith("Спасибо, мы получили ваше сообщение. Номер вашего обращения")
    assert "пн, 30 нояб. 2026\u202fг., 20:00 UTC" in texts["ru"]
    assert texts["zh_Hans"].startswith("谢谢，我们已收到您的消息。您的工单编号是 #42。")
    assert texts["es"].startswith("Gracias, hemos recibido su mensaje. Su número de ticket es #42.")
    # an unknown locale, or none, is the agents' language: English by default
    assert (
        templates.render(
            "receipt", locale="xx", ticket=42, due_at=DUE, reopened=False, response_hours=24.0
        )
        == texts["en"]
    )


def test_russian_plurals() -> None:
    templates = Templates()

    def left(n: int) -> str:
        return templates.render(
            "telegram/link",
            locale="ru",
            result="wrong_code",
            attempts_left=n,
            email="",
            retry_at=None,
            minutes=15,
        )

    assert left(1).endswith("У вас осталась 1 попытка.")
    assert left(3).endswith("У вас осталось 3 попытки.")
    assert left(5).endswith("У вас осталось 5 попыток.")


def test_agent_language_is_a_shipped_locale() -> None:
    base = {"DATABASE_URL": "sqlite:///x.db"}
    assert load_settings(base, env_file=None).agent_language == "en"
    assert load_settings({**base, "AGENT_LANGUAGE": "zh-Hans"}, env_file=None).agent_language == (
        "zh_Hans"
    )
    with pytest.raises(SettingsError, match="AGENT_LANGUAGE: expected one of en, ru, zh_Hans, es"):
        load_settings({**base, "AGENT_LANGUAGE": "klingon"}, env_file=None)
    with pytest.raises(SupportbotError, match="no 'de' locale"):
        Templates(default_locale="de")


def test_a_mail_says_its_language_in_content_language() -> None:
    head = b"From: Li <li@example.cn>\r\nTo: support@example.com\r\nSubject: x\r\n"
    raw = head + b"Content-Language: zh-Hans\r\n\r\nhello\r\n"
    parsed = parse_mail(raw, our_address="support@example.com")
    assert parsed.language == "zh-Hans"
    assert normalise(parsed.language) == "zh_Hans"
    assert parse_mail(head + b"\r\nhello\r\n", our_address="support@example.com").language is None


def test_figures_keep_every_digit_in_the_locale_notation() -> None:
    assert languages.decimal(Decimal("99.41"), "en") == "99.41"
    assert languages.decimal(Decimal("99.41"), "ru") == "99,41"
    assert languages.decimal("99.125", "es") == "99,125"
    assert languages.month_label(2026, 4, "en") == "April 2026"
    assert languages.month_label(2026, 4, "zh_Hans") == "2026年4月"


def test_chinese_sentences_join_without_a_space() -> None:
    templates = Templates()
    context = {"result": "wrong_code", "attempts_left": 2, "email": "", "retry_at": None}
    assert templates.render("telegram/link", locale="zh_Hans", minutes=15, **context) == (
        "验证码不正确。您还有 2 次机会。"
    )
    assert templates.render("telegram/link", locale="es", minutes=15, **context) == (
        "Ese código no es correcto. Le quedan 2 intentos."
    )
