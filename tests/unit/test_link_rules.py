"""The pure rules of linking, as tables: codes and addresses, judging an attempt, /link targets."""

from __future__ import annotations

from datetime import timedelta

import pytest

from accounts.linking import CodeState, LinkResult, is_address, is_code, judge
from accounts.lookups import Target, parse_target
from tests.conftest import START
from tickets.errors import InvalidAction


@pytest.mark.parametrize(
    ("state", "given", "minutes", "verdict"),
    [
        (CodeState(START + timedelta(minutes=15), 0, "h"), "h", 0, LinkResult.LINKED),
        (CodeState(START + timedelta(minutes=15), 4, "h"), "h", 14, LinkResult.LINKED),
        (CodeState(START + timedelta(minutes=15), 0, "h"), "x", 0, LinkResult.WRONG_CODE),
        (CodeState(START + timedelta(minutes=15), 0, "h"), "h", 15, LinkResult.EXPIRED),
        (CodeState(START + timedelta(minutes=15), 5, "h"), "h", 1, LinkResult.NO_ATTEMPTS_LEFT),
        # a request for an address without an account stores no code: nothing ever matches
        (CodeState(START + timedelta(minutes=15), 0, ""), "", 0, LinkResult.WRONG_CODE),
    ],
)
def test_judge(state: CodeState, given: str, minutes: int, verdict: LinkResult) -> None:
    assert judge(state, given, START + timedelta(minutes=minutes)) is verdict


@pytest.mark.parametrize(
    ("text", "code", "address"),
    [
        ("123456", True, False),
        (" 000001 ", True, False),
        ("12345", False, False),
        ("1234567", False, False),
        ("ann@example.com", False, True),
        ("ann@localhost", False, False),
        ("ann example.com", False, False),
    ],
)
def test_codes_and_addresses(text: str, code: bool, address: bool) -> None:
    assert (is_code(text), is_address(text)) == (code, address)


def test_parse_target() -> None:
    assert parse_target("", 7) == Target(7, None)
    assert parse_target("#42", 7) == Target(42, None)
    assert parse_target("Ann@Example.com", None) == Target(None, "ann@example.com")
    with pytest.raises(InvalidAction, match="needs a ticket"):
        parse_target("", None)
    with pytest.raises(InvalidAction, match="neither"):
        parse_target("hello", 7)
