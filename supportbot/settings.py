"""Settings from the environment and an optional `.env` file; every key is in `.env.example`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from accounts.credits import NoticeRoutes
from accounts.http_billing import HttpBillingConfig
from accounts.settings import UptimeSettings
from bot.settings import ReplyMode, TelegramSettings, WebhookSettings
from mail.settings import ImapSettings, SmtpSettings, Tls
from tickets.errors import SupportbotError
from tickets.languages import LOCALES, normalise
from tickets.settings import SatisfactionSettings, SlaSettings
from tickets.sla import BusinessCalendar

DEFAULT_DATABASE_URL = "sqlite:///supportbot.db"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_BILLING_FACTORY = "accounts.billing:ledger_billing"
_DOTTED = re.compile(r"^[A-Za-z_][\w.]*[:.][A-Za-z_]\w*$")
_EMAIL = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")


class SettingsError(SupportbotError):
    """A setting is missing or malformed; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class Settings:
    database_url: str
    sla: SlaSettings
    telegram: TelegramSettings | None = None
    imap: ImapSettings | None = None
    smtp: SmtpSettings | None = None
    support_address: str | None = None
    log_level: str = "INFO"
    # Who answers balance lookups: a factory `module:function` (see accounts/billing.py).
    billing_factory: str = DEFAULT_BILLING_FACTORY
    # Refunds above this total (USD) wait for an admin's approval.
    refund_approval_above: Decimal = Decimal(100)
    uptime: UptimeSettings | None = None
    # A billing service speaking docs/billing-api.md (BILLING_URL); None: BILLING_FACTORY.
    billing_http: HttpBillingConfig | None = None
    # Money moves only on account data younger than this.
    billing_max_age: timedelta = timedelta(hours=1)
    # How often the accounts behind open tickets are read again for their plans.
    plan_refresh_seconds: float = 300.0
    # The operator's HTTP port (/healthz, /readyz, /metrics) as (host, port); None: no port.
    http_listen: tuple[str, int] | None = None
    # Delivered outbox rows, dedup keys and spent rate windows older than this are pruned.
    retention: timedelta = timedelta(days=30)
    # How long /readyz trusts a getMe answer before asking the Bot API again.
    health_cache_seconds: float = 30.0
    # The one language the agents' group reads (AGENT_LANGUAGE): a shipped locale.
    agent_language: str = "en"
    # CSAT_ENABLED: the satisfaction ask after a close; None: off.
    satisfaction: SatisfactionSettings | None = None

    def channels(self) -> list[str]:
        """The customer channels this configuration can run."""
        found = []
        if self.telegram is not None:
            found.append("telegram")
        if self.imap is not None:
            found.append("email")
        return found


def notice_routes(settings: Settings) -> NoticeRoutes:
    """Customer channels this configuration delivers on."""
    address = settings.support_address or ""
    return NoticeRoutes(
        telegram=settings.telegram is not None,
        # as `supportbot.app.run` builds the email sender: only with the whole email channel
        email=settings.imap is not None and settings.smtp is not None and bool(address),
        mail_domain=address.rpartition("@")[2] or "supportbot.invalid",
    )


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments, `export`, single or double quotes) without evaluating."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SettingsError(f"{path.name} line {number}", "expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


class _Reader:
    def __init__(self, source: Mapping[str, str]) -> None:
        self.source = source

    def text(self, key: str, default: str = "") -> str:
        return self.source.get(key, "").strip() or default

    def required(self, key: str, why: str) -> str:
        value = self.text(key)
        if not value:
            raise SettingsError(key, f"missing; it is needed {why}")
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        raw = self.text(key)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(key, f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(key, f"expected a number from {low} to {high}, got {value}")
        return value

    def hours(self, key: str, default: float) -> float:
        raw = self.text(key)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(key, f"expected a number of hours, got {raw!r}") from None
        if not 0 < value <= 10_000:
            raise SettingsError(key, f"expected a positive number of hours, got {raw!r}")
        return value

    def tls(self, key: str, default: Tls) -> Tls:
        raw = self.text(key).lower()
        if not raw:
            return default
        aliases = {"ssl": "tls", "true": "tls", "false": "none", "off": "none", "plain": "none"}
        try:
            return Tls(aliases.get(raw, raw))
        except ValueError:
            raise SettingsError(key, f"expected tls, starttls or none, got {raw!r}") from None


def _calendar(read: _Reader) -> BusinessCalendar:
    parts = {
        "workdays": ("SLA_WORKDAYS", "mon-fri"),
        "hours": ("SLA_HOURS", "00:00-24:00"),
        "holidays": ("SLA_HOLIDAYS", ""),
        "timezone": ("SLA_TIMEZONE", "UTC"),
    }
    values = {name: read.text(key, default) for name, (key, default) in parts.items()}
    for name, (key, _default) in parts.items():
        try:
            BusinessCalendar.from_strings(**{name: values[name]})
        except ValueError as error:
            raise SettingsError(key, str(error).removeprefix(f"{name}: ")) from None
    try:
        return BusinessCalendar.from_strings(**values)
    except ValueError as error:
        raise SettingsError("SLA_HOURS", str(error)) from None


def _satisfaction(read: _Reader) -> SatisfactionSettings | None:
    enabled = read.text("CSAT_ENABLED", "false").lower()
    if enabled not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise SettingsError("CSAT_ENABLED", f"expected true or false, got {enabled!r}")
    if enabled not in ("true", "1", "yes", "on"):
        return None
    base_url = read.required("CSAT_BASE_URL", "score links in mail point there (CSAT_ENABLED)")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError("CSAT_BASE_URL", f"expected an http(s) URL, got {base_url!r}")
    listen = read.text("CSAT_LISTEN", "127.0.0.1:8088")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError("CSAT_LISTEN", f"expected HOST:PORT, got {listen!r}")
    secret = read.text("CSAT_SECRET") or read.text("TELEGRAM_TOKEN")
    if len(secret) < 16:
        raise SettingsError("CSAT_SECRET", "needed (16 characters or more) to sign score links")
    return SatisfactionSettings(
        secret=secret, base_url=base_url.rstrip("/"), listen_host=host, listen_port=int(port)
    )


def _telegram(read: _Reader) -> TelegramSettings | None:
    token = read.text("TELEGRAM_TOKEN")
    if not token:
        return None
    if not re.fullmatch(r"\d+:[A-Za-z0-9_-]{20,}", token):
        raise SettingsError("TELEGRAM_TOKEN", "does not look like a bot token (digits:secret)")
    api_url = read.text("TELEGRAM_API_URL", DEFAULT_TELEGRAM_API_URL).rstrip("/")
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError("TELEGRAM_API_URL", f"expected an http(s) URL, got {api_url!r}")
    chat = read.required("AGENT_CHAT_ID", "to know the agents' group (TELEGRAM_TOKEN is set)")
    try:
        chat_id = int(chat)
    except ValueError:
        raise SettingsError(
            "AGENT_CHAT_ID", f"expected a numeric chat id such as -1001234567890, got {chat!r}"
        ) from None
    timeout = read.integer("TELEGRAM_TIMEOUT_SECONDS", 15, low=1, high=300)
    mode = read.text("REPLY_MODE", ReplyMode.DIRECT.value).lower()
    if mode not in {m.value for m in ReplyMode}:
        raise SettingsError("REPLY_MODE", f"expected direct or confirm, got {mode!r}")
    window = read.integer("REPLY_EDIT_MINUTES", 10, low=0, high=1440)
    return TelegramSettings(
        token=token,
        api_url=api_url,
        agent_chat_id=chat_id,
        timeout=float(timeout),
        reply_mode=ReplyMode(mode),
        edit_window_minutes=window,
        webhook=_webhook(read),
    )


def _webhook(read: _Reader) -> WebhookSettings | None:
    """TELEGRAM_WEBHOOK_URL (+ _SECRET, _LISTEN): webhook mode instead of long polling."""
    url = read.text("TELEGRAM_WEBHOOK_URL")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError("TELEGRAM_WEBHOOK_URL", f"expected an https URL, got {url!r}")
    secret = read.required("TELEGRAM_WEBHOOK_SECRET", "to check every webhook call")
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", secret):
        raise SettingsError(
            "TELEGRAM_WEBHOOK_SECRET", "expected 16 to 256 characters of A-Z, a-z, 0-9, _ and -"
        )
    listen = read.text("TELEGRAM_WEBHOOK_LISTEN", "0.0.0.0:8443")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError("TELEGRAM_WEBHOOK_LISTEN", f"expected host:port, got {listen!r}")
    return WebhookSettings(url=url, secret=secret, host=host.strip("[]"), port=int(port))


def _imap(read: _Reader) -> ImapSettings | None:
    host = read.text("IMAP_HOST")
    if not host:
        return None
    why = "to read the support mailbox (IMAP_HOST is set)"
    tls = read.tls("IMAP_TLS", Tls.TLS)
    return ImapSettings(
        host=host,
        port=read.integer("IMAP_PORT", 993 if tls is Tls.TLS else 143, low=1, high=65535),
        user=read.required("IMAP_USER", why),
        password=read.required("IMAP_PASSWORD", why),
        tls=tls,
        mailbox=read.text("IMAP_MAILBOX", "INBOX"),
    )


def _smtp(read: _Reader, needed: bool) -> SmtpSettings | None:
    host = read.text("SMTP_HOST")
    if not host:
        if needed:
            raise SettingsError("SMTP_HOST", "missing; answers to email leave by SMTP")
        return None
    tls = read.tls("SMTP_TLS", Tls.STARTTLS)
    default_port = {Tls.TLS: 465, Tls.STARTTLS: 587, Tls.NONE: 25}[tls]
    return SmtpSettings(
        host=host,
        port=read.integer("SMTP_PORT", default_port, low=1, high=65535),
        user=read.text("SMTP_USER"),
        password=read.text("SMTP_PASSWORD"),
        tls=tls,
        connections=read.integer("SMTP_CONNECTIONS", 2, low=1, high=16),
    )


def _refund_approval_above(read: _Reader) -> Decimal:
    raw = read.text("REFUND_APPROVAL_ABOVE_USD", "100")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError("REFUND_APPROVAL_ABOVE_USD", f"expected dollars, got {raw!r}") from None
    if not value.is_finite() or value < 0 or value >= 10**9:
        raise SettingsError("REFUND_APPROVAL_ABOVE_USD", f"expected 0 or more dollars, got {raw!r}")
    return value


_SPANS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _span(read: _Reader, key: str, default: timedelta) -> timedelta:
    """A duration: seconds, or a number with s, m, h or d (`90s`, `15m`, `1h`, `2d`)."""
    raw = read.text(key).lower()
    if not raw:
        return default
    unit = raw[-1] if raw[-1] in _SPANS else "s"
    number = raw[:-1] if raw[-1] in _SPANS else raw
    try:
        seconds = float(number) * _SPANS[unit]
    except ValueError:
        raise SettingsError(
            key, f"expected a duration such as 900, 15m or 1h, got {raw!r}"
        ) from None
    if not 1 <= seconds <= 366 * 86400:
        raise SettingsError(key, f"expected a duration from 1 s to 366 days, got {raw!r}")
    return timedelta(seconds=seconds)


def _billing_http(read: _Reader, factory: str) -> HttpBillingConfig | None:
    url = read.text("BILLING_URL").rstrip("/")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError("BILLING_URL", f"expected an http(s) URL, got {url!r}")
    if factory != DEFAULT_BILLING_FACTORY:
        raise SettingsError("BILLING_URL", "set either it or BILLING_FACTORY, not both")
    timeout = read.text("BILLING_TIMEOUT_SECONDS", "5")
    try:
        seconds = float(timeout)
    except ValueError:
        raise SettingsError(
            "BILLING_TIMEOUT_SECONDS", f"expected a number of seconds, got {timeout!r}"
        ) from None
    if not 0.1 <= seconds <= 120:
        raise SettingsError(
            "BILLING_TIMEOUT_SECONDS", f"expected 0.1 to 120 seconds, got {timeout}"
        )
    return HttpBillingConfig(
        url=url,
        token=read.required("BILLING_TOKEN", "to call the billing service (BILLING_URL is set)"),
        timeout=seconds,
        retries=read.integer("BILLING_RETRIES", 2, low=0, high=10),
    )


def _uptime(read: _Reader) -> UptimeSettings | None:
    checks = read.text("UPTIME_CHECKS_FILE")
    maintenance = read.text("UPTIME_MAINTENANCE_FILE")
    instatus = read.text("UPTIME_INSTATUS_FILE")
    if checks and instatus:
        raise SettingsError("UPTIME_INSTATUS_FILE", "set either it or UPTIME_CHECKS_FILE, not both")
    if maintenance and not checks:
        raise SettingsError("UPTIME_MAINTENANCE_FILE", "needs UPTIME_CHECKS_FILE")
    if not checks and not instatus:
        return None
    return UptimeSettings(
        checks_file=Path(checks) if checks else None,
        maintenance_file=Path(maintenance) if maintenance else None,
        instatus_file=Path(instatus) if instatus else None,
    )


def _http_listen(read: _Reader) -> tuple[str, int] | None:
    """HTTP_LISTEN: host:port (or [v6]:port); unset or empty: no HTTP port."""
    raw = read.text("HTTP_LISTEN")
    if not raw:
        return None
    host, sep, port_text = raw.rpartition(":")
    host = host.strip("[]")
    problem = f"expected host:port such as 0.0.0.0:8080 or 127.0.0.1:8080, got {raw!r}"
    if not sep or not host or not port_text.isdigit():
        raise SettingsError("HTTP_LISTEN", problem)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise SettingsError("HTTP_LISTEN", f"expected a port from 1 to 65535, got {port}")
    return host, port


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Read and check every setting; the process environment wins over the `.env` file."""
    source: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        source.update(read_env_file(env_file))
    source.update(os.environ if environ is None else environ)
    read = _Reader(source)

    database_url = read.text("DATABASE_URL", DEFAULT_DATABASE_URL)
    scheme = database_url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres") or "://" not in database_url:
        raise SettingsError(
            "DATABASE_URL", "expected sqlite:///path/to/file.db or postgresql://user@host/db"
        )
    support_address = read.text("SUPPORT_ADDRESS") or None
    if support_address is not None and not _EMAIL.match(support_address):
        raise SettingsError("SUPPORT_ADDRESS", f"not an email address: {support_address!r}")
    imap = _imap(read)
    if imap is not None and support_address is None:
        raise SettingsError("SUPPORT_ADDRESS", "missing; answers by email are sent from it")
    log_level = read.text("LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError("LOG_LEVEL", f"expected DEBUG, INFO, WARNING or ERROR, got {log_level}")
    sla = SlaSettings(
        calendar=_calendar(read),
        response_hours=read.hours("SLA_RESPONSE_HOURS", 24.0),
        target_hours=read.hours("SLA_TARGET_HOURS", 6.0),
        risk_hours=read.hours("SLA_RISK_HOURS", 4.0),
        reopen_days=read.integer("REOPEN_DAYS", 7, low=0, high=3650),
        escalate_after_hours=read.hours("SLA_ESCALATE_AFTER_HOURS", 2.0),
        stale_claim_hours=read.hours("SLA_STALE_CLAIM_HOURS", 4.0),
        watch_interval_seconds=float(
            read.integer("SLA_WATCH_INTERVAL_SECONDS", 60, low=1, high=3600)
        ),
        auto_close_days=read.integer("AUTO_CLOSE_DAYS", 0, low=0, high=3650),
    )
    for key, hours in (
        ("SLA_ESCALATE_AFTER_HOURS", sla.escalate_after_hours),
        ("SLA_STALE_CLAIM_HOURS", sla.stale_claim_hours),
    ):
        if hours > sla.response_hours:
            raise SettingsError(
                key, f"{hours:g} is more than SLA_RESPONSE_HOURS ({sla.response_hours:g})"
            )
    smtp = _smtp(read, needed=imap is not None)
    telegram = _telegram(read)
    if imap is not None and telegram is None:
        raise SettingsError(
            "TELEGRAM_TOKEN", "missing; agents answer email from the Telegram agents' group"
        )
    satisfaction = _satisfaction(read)
    billing_factory = read.text("BILLING_FACTORY", DEFAULT_BILLING_FACTORY)
    if not _DOTTED.match(billing_factory):
        raise SettingsError("BILLING_FACTORY", f"expected module:function, got {billing_factory!r}")
    return Settings(
        refund_approval_above=_refund_approval_above(read),
        database_url=database_url,
        sla=sla,
        satisfaction=satisfaction,
        telegram=telegram,
        imap=imap,
        smtp=smtp,
        support_address=support_address,
        log_level=log_level,
        billing_factory=billing_factory,
        uptime=_uptime(read),
        billing_http=_billing_http(read, billing_factory),
        billing_max_age=_span(read, "BILLING_MAX_AGE", timedelta(hours=1)),
        plan_refresh_seconds=float(read.integer("PLAN_REFRESH_SECONDS", 300, low=5, high=86400)),
        http_listen=_http_listen(read),
        retention=timedelta(days=read.integer("RETENTION_DAYS", 30, low=1, high=3650)),
        agent_language=_agent_language(read),
    )


def _agent_language(read: _Reader) -> str:
    """AGENT_LANGUAGE: one of the shipped locales (`zh` and `zh-Hans` name Simplified Chinese)."""
    value = read.text("AGENT_LANGUAGE", "en")
    locale = value if value in LOCALES else normalise(value)
    if locale is None:
        raise SettingsError(
            "AGENT_LANGUAGE", f"expected one of {', '.join(LOCALES)}, got {value!r}"
        )
    return locale
