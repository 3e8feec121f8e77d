"""Settings: defaults, the .env file, and one clear error naming the key for every broken value."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from mail.settings import Tls
from supportbot.settings import DEFAULT_DATABASE_URL, SettingsError, load_settings
from tickets.sla import BusinessCalendar

TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345"


def test_defaults_need_nothing() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.channels() == []
    assert settings.sla.calendar == BusinessCalendar()
    assert (settings.sla.response_hours, settings.sla.target_hours, settings.sla.risk_hours) == (
        24.0,
        6.0,
        4.0,
    )


def test_full_configuration() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://support@db.internal/support",
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": "http://127.0.0.1:8081/",
            "AGENT_CHAT_ID": "-1001234567890",
            "IMAP_HOST": "imap.example.com",
            "IMAP_USER": "support@example.com",
            "IMAP_PASSWORD": "imap-secret",
            "SMTP_HOST": "smtp.example.com",
            "SMTP_TLS": "tls",
            "SUPPORT_ADDRESS": "support@example.com",
            "SLA_WORKDAYS": "mon-thu",
            "SLA_HOURS": "09:00-17:00",
            "SLA_HOLIDAYS": "2026-12-24, 2026-12-25",
            "SLA_TIMEZONE": "Europe/Berlin",
        },
        env_file=None,
    )
    assert settings.channels() == ["telegram", "email"]
    assert settings.telegram is not None and settings.telegram.api_url == "http://127.0.0.1:8081"
    assert settings.telegram.agent_chat_id == -1001234567890
    assert settings.imap is not None and (settings.imap.port, settings.imap.tls) == (993, Tls.TLS)
    assert settings.smtp is not None and settings.smtp.port == 465
    assert settings.sla.calendar == BusinessCalendar.from_strings(
        workdays="mon-thu",
        hours="09:00-17:00",
        holidays="2026-12-24,2026-12-25",
        timezone="Europe/Berlin",
    )


def test_secrets_stay_out_of_repr() -> None:
    settings = load_settings(
        {
            "TELEGRAM_TOKEN": TOKEN,
            "AGENT_CHAT_ID": "-100",
            "IMAP_HOST": "h",
            "IMAP_USER": "u",
            "IMAP_PASSWORD": "imap-secret",
            "SMTP_HOST": "s",
            "SMTP_PASSWORD": "smtp-secret",
            "SUPPORT_ADDRESS": "s@example.com",
        },
        env_file=None,
    )
    text = repr(settings)
    assert TOKEN not in text and "imap-secret" not in text and "smtp-secret" not in text


WEBHOOK = {
    "TELEGRAM_TOKEN": TOKEN,
    "AGENT_CHAT_ID": "-100123",
    "TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/hook",
    "TELEGRAM_WEBHOOK_SECRET": "a-secret-of-32-characters-000000",
}


def test_webhook_settings() -> None:
    settings = load_settings({**WEBHOOK, "TELEGRAM_WEBHOOK_LISTEN": "[::]:9000"}, env_file=None)
    assert settings.telegram is not None and settings.telegram.webhook is not None
    hook = settings.telegram.webhook
    assert (hook.host, hook.port, hook.path) == ("::", 9000, "/telegram/hook")
    assert WEBHOOK["TELEGRAM_WEBHOOK_SECRET"] not in repr(settings)
    polling = load_settings({**WEBHOOK, "TELEGRAM_WEBHOOK_URL": ""}, env_file=None)
    assert polling.telegram is not None and polling.telegram.webhook is None


@pytest.mark.parametrize(
    ("environ", "key", "fragment"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL", "sqlite:///"),
        ({"TELEGRAM_TOKEN": "nonsense"}, "TELEGRAM_TOKEN", "bot token"),
        ({"TELEGRAM_TOKEN": TOKEN}, "AGENT_CHAT_ID", "missing"),
        ({"TELEGRAM_TOKEN": TOKEN, "AGENT_CHAT_ID": "agents"}, "AGENT_CHAT_ID", "numeric chat id"),
        (
            {"TELEGRAM_TOKEN": TOKEN, "AGENT_CHAT_ID": "-1", "TELEGRAM_API_URL": "ftp://x"},
            "TELEGRAM_API_URL",
            "http",
        ),
        ({"IMAP_HOST": "h"}, "IMAP_USER", "missing"),
        (
            {"IMAP_HOST": "h", "IMAP_USER": "u", "IMAP_PASSWORD": "p", "IMAP_PORT": "99999"},
            "IMAP_PORT",
            "1 to 65535",
        ),
        ({"SMTP_HOST": "h", "SMTP_CONNECTIONS": "0"}, "SMTP_CONNECTIONS", "1 to 16"),
        ({"SMTP_HOST": "h", "SMTP_CONNECTIONS": "lots"}, "SMTP_CONNECTIONS", "whole number"),
        (
            {"IMAP_HOST": "h", "IMAP_USER": "u", "IMAP_PASSWORD": "p", "IMAP_TLS": "maybe"},
            "IMAP_TLS",
            "starttls",
        ),
        ({"IMAP_HOST": "h", "IMAP_USER": "u", "IMAP_PASSWORD": "p"}, "SUPPORT_ADDRESS", "missing"),
        (
            {"IMAP_HOST": "h", "IMAP_USER": "u", "IMAP_PASSWORD": "p", "SUPPORT_ADDRESS": "a@b.c"},
            "SMTP_HOST",
            "missing",
        ),
        ({"SUPPORT_ADDRESS": "not-an-address"}, "SUPPORT_ADDRESS", "not an email"),
        (
            {
                "IMAP_HOST": "h",
                "IMAP_USER": "u",
                "IMAP_PASSWORD": "p",
                "SUPPORT_ADDRESS": "a@b.c",
                "SMTP_HOST": "s",
            },
            "TELEGRAM_TOKEN",
            "agents answer email",
        ),
        ({"SLA_WORKDAYS": "weekdays"}, "SLA_WORKDAYS", "weekdays"),
        ({"SLA_HOURS": "9-17"}, "SLA_HOURS", "HH:MM"),
        ({"SLA_HOLIDAYS": "2026-13-45"}, "SLA_HOLIDAYS", "2026-13-45"),
        ({"SLA_TIMEZONE": "Mars/Olympus"}, "SLA_TIMEZONE", "Mars/Olympus"),
        ({"SLA_RESPONSE_HOURS": "soon"}, "SLA_RESPONSE_HOURS", "number of hours"),
        ({"SLA_RISK_HOURS": "-2"}, "SLA_RISK_HOURS", "positive"),
        ({"REOPEN_DAYS": "x"}, "REOPEN_DAYS", "whole number"),
        ({"SLA_ESCALATE_AFTER_HOURS": "30"}, "SLA_ESCALATE_AFTER_HOURS", "more than"),
        ({"SLA_STALE_CLAIM_HOURS": "0"}, "SLA_STALE_CLAIM_HOURS", "positive"),
        ({"SLA_WATCH_INTERVAL_SECONDS": "0"}, "SLA_WATCH_INTERVAL_SECONDS", "1"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "DEBUG"),
        ({"BILLING_URL": "billing.example.com"}, "BILLING_URL", "http(s) URL"),
        ({"BILLING_URL": "https://b.example.com"}, "BILLING_TOKEN", "missing"),
        (
            {"BILLING_URL": "https://b.example.com", "BILLING_FACTORY": "my.billing:make"},
            "BILLING_URL",
            "not both",
        ),
        (
            {
                "BILLING_URL": "https://b.example.com",
                "BILLING_TOKEN": "t",
                "BILLING_TIMEOUT_SECONDS": "forever",
            },
            "BILLING_TIMEOUT_SECONDS",
            "seconds",
        ),
        (
            {"BILLING_URL": "https://b.example.com", "BILLING_TOKEN": "t", "BILLING_RETRIES": "99"},
            "BILLING_RETRIES",
            "0 to 10",
        ),
        ({"BILLING_MAX_AGE": "a while"}, "BILLING_MAX_AGE", "15m or 1h"),
        ({"BILLING_MAX_AGE": "0s"}, "BILLING_MAX_AGE", "1 s to 366 days"),
        ({"PLAN_REFRESH_SECONDS": "1"}, "PLAN_REFRESH_SECONDS", "5 to 86400"),
        ({"HTTP_LISTEN": "8080"}, "HTTP_LISTEN", "host:port"),
        ({"HTTP_LISTEN": "0.0.0.0:http"}, "HTTP_LISTEN", "host:port"),
        ({"HTTP_LISTEN": "0.0.0.0:70000"}, "HTTP_LISTEN", "1 to 65535"),
        ({"RETENTION_DAYS": "0"}, "RETENTION_DAYS", "1 to 3650"),
        ({"RETENTION_DAYS": "a month"}, "RETENTION_DAYS", "whole number"),
        (
            {**WEBHOOK, "TELEGRAM_WEBHOOK_SECRET": ""},
            "TELEGRAM_WEBHOOK_SECRET",
            "missing",
        ),
        (
            {**WEBHOOK, "TELEGRAM_WEBHOOK_SECRET": "short"},
            "TELEGRAM_WEBHOOK_SECRET",
            "16 to 256",
        ),
        ({**WEBHOOK, "TELEGRAM_WEBHOOK_URL": "bot.example.com"}, "TELEGRAM_WEBHOOK_URL", "https"),
        ({**WEBHOOK, "TELEGRAM_WEBHOOK_LISTEN": "8443"}, "TELEGRAM_WEBHOOK_LISTEN", "host:port"),
        ({**WEBHOOK, "TELEGRAM_WEBHOOK_LISTEN": "h:0"}, "TELEGRAM_WEBHOOK_LISTEN", "host:port"),
        ({"AUTO_CLOSE_DAYS": "-1"}, "AUTO_CLOSE_DAYS", "0"),
        ({"AUTO_CLOSE_DAYS": "soon"}, "AUTO_CLOSE_DAYS", "whole number"),
        ({"CSAT_ENABLED": "maybe"}, "CSAT_ENABLED", "true or false"),
        ({"CSAT_ENABLED": "true"}, "CSAT_BASE_URL", "missing"),
        (
            {"CSAT_ENABLED": "true", "CSAT_BASE_URL": "support.example.com"},
            "CSAT_BASE_URL",
            "http(s) URL",
        ),
        (
            {"CSAT_ENABLED": "on", "CSAT_BASE_URL": "https://s.example.com", "CSAT_LISTEN": "8088"},
            "CSAT_LISTEN",
            "HOST:PORT",
        ),
        (
            {"CSAT_ENABLED": "yes", "CSAT_BASE_URL": "https://s.example.com"},
            "CSAT_SECRET",
            "16 characters",
        ),
    ],
)
def test_broken_setting_names_its_key(environ: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ, env_file=None)
    assert caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"{key}: ") and fragment in message
    assert "\n" not in message


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# comment\n"
        "export DATABASE_URL='sqlite:///from-file.db'\n"
        'SLA_HOURS="09:00-17:00"\n'
        "SLA_RISK_HOURS=2  # inline comment\n"
        "\n",
        encoding="utf-8",
    )
    settings = load_settings({"SLA_HOURS": "08:00-16:00"}, env_file=env)
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.sla.risk_hours == 2.0
    assert settings.sla.calendar == BusinessCalendar.from_strings(hours="08:00-16:00")


def test_malformed_env_file_names_the_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("GOOD=1\nthis is not a setting\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"\.env line 2: expected KEY=VALUE"):
        load_settings({}, env_file=env)


def test_env_example_documents_every_key_and_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    example = root / ".env.example"
    source = (root / "supportbot" / "settings.py").read_text(encoding="utf-8")
    read = set(re.findall(r'read\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))
    read |= set(re.findall(r'\("(SLA_[A-Z]+)", "', source))
    documented = set(
        re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example.read_text(encoding="utf-8"), re.M)
    )
    assert len(read) > 20
    assert read <= documented, f"undocumented: {sorted(read - documented)}"
    settings = load_settings({}, env_file=example)
    assert settings.channels() == [] and settings.database_url == DEFAULT_DATABASE_URL


def test_billing_settings() -> None:
    settings = load_settings(
        {
            "BILLING_URL": "https://billing.example.com/",
            "BILLING_TOKEN": "s3cret-token",
            "BILLING_TIMEOUT_SECONDS": "2.5",
            "BILLING_MAX_AGE": "15m",
            "PLAN_REFRESH_SECONDS": "60",
        },
        env_file=None,
    )
    assert settings.billing_http is not None
    assert settings.billing_http.url == "https://billing.example.com"
    assert (settings.billing_http.timeout, settings.billing_http.retries) == (2.5, 2)
    assert "s3cret-token" not in repr(settings)
    assert settings.billing_max_age == timedelta(minutes=15)
    assert settings.plan_refresh_seconds == 60
    default = load_settings({}, env_file=None)
    assert default.billing_http is None and default.billing_max_age == timedelta(hours=1)


def test_operator_port_and_retention() -> None:
    default = load_settings({}, env_file=None)
    assert default.http_listen is None, "no HTTP port unless HTTP_LISTEN asks for one"
    assert default.retention == timedelta(days=30)
    settings = load_settings({"HTTP_LISTEN": "0.0.0.0:8080", "RETENTION_DAYS": "90"}, env_file=None)
    assert settings.http_listen == ("0.0.0.0", 8080)
    assert settings.retention == timedelta(days=90)
    ipv6 = load_settings({"HTTP_LISTEN": "[::1]:9090"}, env_file=None)
    assert ipv6.http_listen == ("::1", 9090)


def test_pending_and_satisfaction_settings() -> None:
    defaults = load_settings({}, env_file=None)
    assert defaults.sla.auto_close_days == 0 and defaults.satisfaction is None
    settings = load_settings(
        {
            "AUTO_CLOSE_DAYS": "5",
            "CSAT_ENABLED": "true",
            "CSAT_BASE_URL": "https://support.example.com/",
            "CSAT_LISTEN": "0.0.0.0:9000",
            "CSAT_SECRET": "a secret of enough length",
        },
        env_file=None,
    )
    assert settings.sla.auto_close_days == 5
    found = settings.satisfaction
    assert found is not None
    assert (found.base_url, found.listen_host, found.listen_port) == (
        "https://support.example.com",
        "0.0.0.0",
        9000,
    )
    assert "a secret" not in repr(found)
