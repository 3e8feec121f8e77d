"""Pure rules of the agents' console: tags, where they show, the edit window, REPLY_MODE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.format import MAX_TOPIC_TITLE, CardFacts, card_text, topic_title
from bot.settings import ReplyMode
from supportbot.settings import SettingsError, load_settings
from tickets.console import edit_in_window
from tickets.errors import InvalidAction
from tickets.policy import SlaPolicy
from tickets.reports.figures import tag_breakdown
from tickets.sla import BusinessCalendar
from tickets.tags import TAG_LENGTH, TAGS_PER_TICKET, merged_tags, normalise_tag

TELEGRAM = {"TELEGRAM_TOKEN": "123456:abcdefghijklmnopqrstuvwxyz", "AGENT_CHAT_ID": "-100"}


@pytest.mark.parametrize(
    ("word", "tag"),
    [
        ("Billing", "billing"),
        ("#refund", "refund"),
        ("ＶＩＰ", "vip"),  # full-width letters fold (NFKC)
        ("Straße", "strasse"),
        ("pro-plan", "pro-plan"),
        ("tron_usdt", "tron_usdt"),
        ("возврат", "возврат"),
        ("x" * TAG_LENGTH, "x" * TAG_LENGTH),
    ],
)
def test_a_tag_is_one_normalised_word(word: str, tag: str) -> None:
    assert normalise_tag(word) == tag


@pytest.mark.parametrize(
    ("word", "fragment"),
    [
        ("", "empty"),
        ("#", "empty"),
        ("x" * (TAG_LENGTH + 1), f"at most {TAG_LENGTH} characters"),
        ("bad!word", "one word"),
        ("-lead", "one word"),
        ("trail_", "one word"),
        ("<b>", "one word"),
    ],
)
def test_a_bad_tag_is_refused_with_its_reason(word: str, fragment: str) -> None:
    with pytest.raises(InvalidAction, match=fragment):
        normalise_tag(word)


def test_tags_merge_without_doubles_and_stop_at_the_bound() -> None:
    tags, new = merged_tags(["billing"], ["Refund", "billing", "#refund", "vip"])
    assert tags == ["billing", "refund", "vip"] and new == ["refund", "vip"]
    full = [f"t{i}" for i in range(TAGS_PER_TICKET)]
    assert merged_tags(full, ["t0"]) == (sorted(full), [])
    with pytest.raises(InvalidAction, match="room for 0 more"):
        merged_tags(full, ["one-more"])
    with pytest.raises(InvalidAction, match="one word"):  # nothing added when one word is bad
        merged_tags([], ["good", "b@d"])


def test_tags_show_in_the_topic_title_and_on_the_card() -> None:
    assert topic_title(5, "pro", "Ann", "due Mon 20:00", ("billing", "vip")) == (
        "#5 · PRO · due Mon 20:00 · Ann · 🏷 billing vip"
    )
    assert topic_title(5, "basic", "", tags=("x",)) == "#5 · BASIC · 🏷 x"
    long = topic_title(5, "basic", "Ann " * 50, tags=tuple("t" * 30 + str(i) for i in range(10)))
    assert len(long) <= MAX_TOPIC_TITLE and "🏷 tttt" in long and "Ann" in long
    facts = CardFacts(5, "pro", "telegram", "Ann", None, tags=("billing",))
    assert card_text(facts, "hi").startswith(
        "<b>🎫 #5 · PRO · telegram · Ann · not waiting · 🏷 billing</b>"
    )


def test_tag_breakdown_counts_a_response_under_each_tag() -> None:
    policy = SlaPolicy(BusinessCalendar())
    rows = tag_breakdown([("b", 2.0), ("a", 30.0), ("b", 7.0), ("b", 1.0)], policy)
    assert [(r.name, r.summary.responses) for r in rows] == [("b", 3), ("a", 1)]
    assert rows[0].summary.p50 == 2.0 and rows[0].summary.within_target == 2


def test_the_edit_window_includes_its_last_moment() -> None:
    sent = datetime(2026, 12, 1, 12, tzinfo=UTC)
    window = timedelta(minutes=10)
    assert edit_in_window(sent, sent + window, window)
    assert not edit_in_window(sent, sent + window + timedelta(seconds=1), window)
    assert not edit_in_window(sent, sent + timedelta(seconds=1), timedelta(0))


def test_reply_mode_and_edit_window_settings() -> None:
    default = load_settings(TELEGRAM, env_file=None).telegram
    assert default is not None
    assert default.reply_mode is ReplyMode.DIRECT and default.edit_window_minutes == 10
    chosen = load_settings(
        {**TELEGRAM, "REPLY_MODE": "Confirm", "REPLY_EDIT_MINUTES": "0"}, env_file=None
    ).telegram
    assert chosen is not None
    assert chosen.reply_mode is ReplyMode.CONFIRM and chosen.edit_window_minutes == 0
    for key, value, fragment in (
        ("REPLY_MODE", "ask", "direct or confirm"),
        ("REPLY_EDIT_MINUTES", "1441", "0 to 1440"),
        ("REPLY_EDIT_MINUTES", "soon", "whole number"),
    ):
        with pytest.raises(SettingsError) as caught:
            load_settings({**TELEGRAM, key: value}, env_file=None)
        assert caught.value.key == key and fragment in str(caught.value)
