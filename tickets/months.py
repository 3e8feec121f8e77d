"""A calendar month, the one period reports and SLA credits are counted in.

Reports take a month in the SLA calendar's time zone (`Month.of(moment, tz)`, `start_in(tz)`);
SLA credits take it in UTC (`start`, `end`). `YYYY-MM` is how agents, the command line and the
stored credits write one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Final

from tickets.errors import SupportbotError

_MONTH_RE: Final = re.compile(r"(\d{4})-(\d{2})")
_MONTH_NAMES: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


class InvalidMonth(SupportbotError):
    """A month that is malformed or, for a report, lies in the future."""


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, e.g. 2026-11."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """Read `YYYY-MM`, the form agents type after /report and on the command line."""
        match = _MONTH_RE.fullmatch(text.strip())
        if match is None:
            raise InvalidMonth(f"expected a month as YYYY-MM, e.g. 2026-11, got {text.strip()!r}")
        year, month = int(match.group(1)), int(match.group(2))
        if not 1 <= month <= 12 or not 1970 <= year < 9999:  # 9999-12 would end in year 10000
            raise InvalidMonth(f"there is no month {text.strip()!r}")
        return cls(year, month)

    @classmethod
    def of(cls, moment: datetime, tz: tzinfo = UTC) -> Month:
        """The month `moment` falls in, in the time zone `tz` (UTC unless given)."""
        local = moment.astimezone(tz)
        return cls(local.year, local.month)

    def start_in(self, tz: tzinfo) -> datetime:
        """Local midnight of the month's first day in the time zone `tz`."""
        return datetime(self.year, self.month, 1, tzinfo=tz)

    @property
    def start(self) -> datetime:
        """The month's first moment in UTC."""
        return self.start_in(UTC)

    @property
    def end(self) -> datetime:
        """The next month's first moment in UTC."""
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @property
    def label(self) -> str:
        """As people read it: `March 2026`."""
        return f"{_MONTH_NAMES[self.month - 1]} {self.year}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
