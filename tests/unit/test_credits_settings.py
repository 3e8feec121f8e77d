"""The uptime source settings of the automatic SLA credits."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.credits import NoticeRoutes
from accounts.settings import UptimeSettings
from supportbot.settings import SettingsError, load_settings, notice_routes


def test_no_uptime_source_means_no_automatic_credits() -> None:
    assert load_settings({}, env_file=None).uptime is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"UPTIME_CHECKS_FILE": "/data/checks.csv", "UPTIME_MAINTENANCE_FILE": "/data/m.csv"},
            UptimeSettings(
                checks_file=Path("/data/checks.csv"), maintenance_file=Path("/data/m.csv")
            ),
        ),
        (
            {"UPTIME_INSTATUS_FILE": "export.json"},
            UptimeSettings(instatus_file=Path("export.json")),
        ),
    ],
)
def test_uptime_sources(environ: dict[str, str], expected: UptimeSettings) -> None:
    assert load_settings(environ, env_file=None).uptime == expected


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"UPTIME_CHECKS_FILE": "c.csv", "UPTIME_INSTATUS_FILE": "i.json"}, "UPTIME_INSTATUS_FILE"),
        ({"UPTIME_MAINTENANCE_FILE": "m.csv"}, "UPTIME_MAINTENANCE_FILE"),
        (
            {"UPTIME_MAINTENANCE_FILE": "m.csv", "UPTIME_INSTATUS_FILE": "i"},
            "UPTIME_MAINTENANCE_FILE",
        ),
    ],
)
def test_conflicting_sources_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(environ, env_file=None)
    assert error.value.key == key


def test_notices_go_only_over_channels_the_service_runs() -> None:
    token = {"TELEGRAM_TOKEN": "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345", "AGENT_CHAT_ID": "-100"}
    smtp_only = {**token, "SMTP_HOST": "smtp.example.com", "SUPPORT_ADDRESS": "help@example.com"}
    assert notice_routes(load_settings(smtp_only, env_file=None)) == NoticeRoutes(
        telegram=True, email=False, mail_domain="example.com"
    )
    email = {**smtp_only, "IMAP_HOST": "imap.example.com", "IMAP_USER": "u", "IMAP_PASSWORD": "p"}
    assert notice_routes(load_settings(email, env_file=None)) == NoticeRoutes(
        telegram=True, email=True, mail_domain="example.com"
    )
