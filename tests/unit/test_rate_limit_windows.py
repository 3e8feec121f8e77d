"""Rate windows: the pure sliding-window rule as a table (races on both databases: integration)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import START
from tickets.rate_limits import RateRule, Window

THREE_AN_HOUR = RateRule("test", 3, timedelta(hours=1))


def at(minutes: float) -> float:
    return (START + timedelta(minutes=minutes)).timestamp()


@pytest.mark.parametrize(
    ("uses", "minutes", "retry_in"),
    [
        ([], 0, None),
        ([at(-50), at(-20)], 0, None),
        ([at(-50), at(-20), at(-5)], 0, 10),  # the oldest leaves the window 10 minutes on
        ([at(-70), at(-20), at(-5)], 0, None),  # one is older than the window
        ([at(-60), at(-20), at(-5)], 0, None),  # exactly a window ago is outside it
        ([at(-5), at(-50), at(-20)], 0, 10),  # order does not matter
        # A request that read its clock before waiting for the row's lock still sees the uses
        # of the requests it waited for, though they are stamped later than its own time.
        ([at(1), at(2), at(3)], 0, 61),
    ],
)
def test_a_use_is_allowed_while_fewer_than_n_fall_in_the_window(
    uses: list[float], minutes: float, retry_in: float | None
) -> None:
    window = Window(list(uses))
    expected = START + timedelta(minutes=retry_in) if retry_in is not None else None
    assert window.retry_at(THREE_AN_HOUR, START + timedelta(minutes=minutes)) == expected


def test_a_window_keeps_only_the_uses_that_still_count() -> None:
    window = Window([at(-90), at(-30), at(-20), at(-10)])
    window.use(THREE_AN_HOUR, START)
    assert window.uses == [at(-20), at(-10), at(0)] and window.changed
    ten = RateRule("ten", 10, timedelta(hours=1))
    growing = Window([])
    for minute in range(12):
        growing.use(ten, START + timedelta(minutes=minute))
    assert growing.uses == [at(m) for m in range(2, 12)]
    single = Window([at(-5)])
    single.use(RateRule("one", 1, timedelta(minutes=1)), START)
    assert single.uses == [at(0)]


def test_a_holder_is_told_once_per_spell_over_the_limit() -> None:
    window = Window([at(-3), at(-2), at(-1)])
    assert window.refuse(START) is True
    assert window.refuse(START + timedelta(minutes=1)) is False
    window.use(THREE_AN_HOUR, START + timedelta(hours=2))  # a use allowed again ends the spell
    assert window.refuse(START + timedelta(hours=2, minutes=1)) is True


def test_a_rule_needs_a_limit_and_a_window() -> None:
    with pytest.raises(ValueError, match="limit"):
        RateRule("bad", 0, timedelta(hours=1))
    with pytest.raises(ValueError, match="window"):
        RateRule("bad", 1, timedelta(0))
