"""Mentions in agents' notices: links that notify, built only from well-formed pairs."""

from __future__ import annotations

from bot.format import MAX_TEXT, notice_html, sla_state, utf16_len
from tests.conftest import START


def test_mentions_become_links_after_the_escaped_text() -> None:
    html_text = notice_html("Call <admins> & co", [[123, "Ada <x>"], [456, "Bo"]])
    assert html_text == (
        "Call &lt;admins&gt; &amp; co\n"
        '<a href="tg://user?id=123">Ada &lt;x&gt;</a> <a href="tg://user?id=456">Bo</a>'
    )


def test_malformed_mentions_from_a_payload_are_skipped() -> None:
    assert notice_html("hi", [[True, "x"], [0, "y"], ["1", "z"], [5], [-3, "n"]]) == "hi"


def test_a_long_notice_leaves_room_for_its_mentions() -> None:
    html_text = notice_html("x" * 5000, [[123, "Ada"]])
    visible = html_text.replace('<a href="tg://user?id=123">', "").replace("</a>", "")
    assert utf16_len(visible) <= MAX_TEXT and visible.endswith("\nAda")


def test_sla_state_marks_risk_and_breach() -> None:
    assert sla_state(START, START) == "🔴 BREACHED"
    later = START.replace(hour=20)
    assert sla_state(later, START, at_risk=True) == "🟠 due Tue 20:00"
    assert sla_state(later, START) == "due Tue 20:00"
    assert sla_state(None, START) == "answered"
