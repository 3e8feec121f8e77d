"""The core's SLA settings section; `supportbot.settings` reads it from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from tickets.sla import BusinessCalendar


@dataclass(frozen=True)
class SlaSettings:
    calendar: BusinessCalendar
    response_hours: float = 24.0
    target_hours: float = 6.0
    risk_hours: float = 4.0
    reopen_days: int = 7
    escalate_after_hours: float = 2.0
    stale_claim_hours: float = 4.0
    watch_interval_seconds: float = 60.0
    # Answered tickets close after this many business days without a customer reply (0 = off).
    auto_close_days: int = 0


@dataclass(frozen=True)
class SatisfactionSettings:
    """`CSAT_*`: the satisfaction ask after a close (issue 15, point 7)."""

    secret: str = field(repr=False)
    # Where customers' score links point: this service's HTTP endpoint as the world reaches it.
    base_url: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8088
