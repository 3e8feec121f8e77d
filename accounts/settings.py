"""The money side's settings sections; `supportbot.settings` reads them from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UptimeSettings:
    """Where the month's uptime comes from for the automatic SLA credits (one source)."""

    checks_file: Path | None = None
    maintenance_file: Path | None = None
    instatus_file: Path | None = None
