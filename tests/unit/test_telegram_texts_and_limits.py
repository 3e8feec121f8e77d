"""Telegram texts and pacing without a server: escaping, cards, splits, digests, the limiter."""

from __future__ import annotations

import contextlib
import html
import math
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import telegram

from bot.format import (
    MAX_TEXT,
    CardFacts,
    card_text,
    clip,
    digest_capacity,
    digest_line,
    digest_text,
    escape,
    sla_state,
    split_text,
    topic_title,
    utf16_len,
)
from bot.limits import Budget, TelegramLimiter
from bot.senders import parts_of
from tickets.model import Attachment

HOSTILE = "<b>&amp; <script>alert('x')</script> & 'quotes' \"too\""


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


GROUP, ANN, BOB = -1001, 11, 12


@pytest.mark.parametrize(
    ("history", "at", "chat", "wait"),
    [
        ([], 0.0, ANN, 0.0),
        ([(0.0, ANN)], 0.5, ANN, 0.6),  # 1 s window + 0.1 s margin
        ([(0.0, ANN)], 1.1, ANN, 0.0),
        ([(0.0, ANN)], 0.5, BOB, 0.0),  # another chat is not held up
        ([(0.0, GROUP)] * 19, 1.0, GROUP, 0.0),
        ([(0.0, GROUP)] * 20, 1.0, GROUP, 59.1),
        ([(0.0, GROUP)] * 10 + [(30.0, GROUP)] * 10, 60.2, GROUP, 0.0),
        ([(0.0, GROUP)] * 10 + [(30.0, GROUP)] * 10, 45.0, GROUP, 15.1),
        ([(0.0, 100 + n) for n in range(27)], 0.5, ANN, 0.6),  # the bot-wide limit (27/s)
        ([(0.0, 100 + n) for n in range(26)], 0.5, ANN, 0.0),
    ],
)
def test_limiter_waits(history: list[tuple[float, int]], at: float, chat: int, wait: float) -> None:
    clock = FakeMonotonic()
    limiter = TelegramLimiter(clock=clock, sleep=clock.sleep, margin=0.1)
    start = clock.now
    for offset, chat_id in history:
        clock.now = start + offset
        limiter.record(chat_id)
    clock.now = start + at
    assert limiter.wait_time(chat) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("sent", "at", "free"),
    [(0, 0.0, 20), (5, 0.0, 15), (20, 0.0, 0), (20, 60.09, 0), (20, 60.11, 20), (25, 0.0, 0)],
)
def test_limiter_free_group_slots(sent: int, at: float, free: int) -> None:
    clock = FakeMonotonic()
    limiter = TelegramLimiter(clock=clock, sleep=clock.sleep, margin=0.1, overall=Budget(1000, 1.0))
    start = clock.now
    for _ in range(sent):
        limiter.record(GROUP)
    clock.now = start + at
    assert limiter.free_group_slots(GROUP) == free


@pytest.mark.parametrize(
    ("history", "at", "spend", "gap"),
    [
        ([], 0.0, 0, 60.1 / 20),  # an idle group: the window's steady pace
        ([], 0.0, 2, 60.1 / 18),  # a topic and a card now leave 18 slots for 60.1 s
        ([0.0] * 4, 0.0, 0, 60.1 / 16),
        ([0.0] * 4, 0.0, 2, 60.1 / 14),  # over 3.9 s: no third ticket alone
        ([0.0] * 14, 0.4, 0, 59.7 / 6),  # 14 spent at once: the 6 left must last 59.7 s
        ([3.3 * k for k in range(18)], 57.0, 0, (60.1 + 3.3 * 17 - 57.0) / 19),  # even use
        ([0.0] * 20, 1.0, 0, math.inf),
        ([0.0] * 19, 1.0, 2, math.inf),
    ],
)
def test_limiter_spread_gap(history: list[float], at: float, spend: int, gap: float) -> None:
    clock = FakeMonotonic()
    limiter = TelegramLimiter(clock=clock, sleep=clock.sleep, margin=0.1, overall=Budget(1000, 1.0))
    start = clock.now
    for offset in history:
        clock.now = start + offset
        limiter.record(GROUP)
    clock.now = start + at
    assert limiter.spread_gap(GROUP, spend=spend) == pytest.approx(gap)
    assert limiter.last_sent(GROUP) == (start + history[-1] if history else -math.inf)


async def test_limiter_sending_waits_then_records() -> None:
    clock = FakeMonotonic()
    limiter = TelegramLimiter(clock=clock, sleep=clock.sleep, margin=0.1)
    start = clock.now
    for _ in range(3):
        async with limiter.sending(ANN):
            pass
    assert clock.now - start == pytest.approx(2.2)
    assert limiter.wait_time(ANN) == pytest.approx(1.1)


async def test_limiter_counts_a_send_from_when_its_request_returns() -> None:
    """Telegram counts a request when it arrives, which may be long after it was granted:
    the window runs from the request's return, never from the grant."""
    clock = FakeMonotonic()
    limiter = TelegramLimiter(clock=clock, sleep=clock.sleep, margin=0.1)
    start = clock.now
    async with limiter.sending(ANN):
        clock.now += 0.5  # a slow request, or a busy event loop
        assert limiter.wait_time(ANN) == pytest.approx(1.1)  # in flight: a whole window yet
        assert limiter.last_sent(ANN) == clock.now
    assert limiter.wait_time(ANN) == pytest.approx(1.1)
    async with limiter.sending(ANN):
        assert clock.now - start == pytest.approx(1.6)


async def test_limiter_counts_sends_in_flight_against_every_window() -> None:
    clock = FakeMonotonic()
    limiter = TelegramLimiter(clock=clock, sleep=clock.sleep, margin=0.1, overall=Budget(3, 1.0))
    async with contextlib.AsyncExitStack() as flying:
        for chat in (GROUP, ANN, BOB):
            await flying.enter_async_context(limiter.sending(chat))
        assert limiter.overall_wait_time() == pytest.approx(1.1)
        assert limiter.wait_time(13) == pytest.approx(1.1)
        assert limiter.free_group_slots(GROUP) == 19
        assert limiter.spread_gap(GROUP) == pytest.approx(60.1 / 19)
        clock.now += 2.0
    assert limiter.wait_time(13) == pytest.approx(1.1)  # all three returned just now
    clock.now += 0.6
    assert limiter.wait_time(13) == pytest.approx(0.5)


async def test_limiter_counts_a_send_that_failed() -> None:
    clock = FakeMonotonic()
    limiter = TelegramLimiter(clock=clock, sleep=clock.sleep, margin=0.1)

    async def timed_out_send() -> None:
        async with limiter.sending(ANN):
            clock.now += 0.3
            raise telegram.error.TimedOut()

    with pytest.raises(telegram.error.TimedOut):
        await timed_out_send()
    assert limiter.wait_time(ANN) == pytest.approx(1.1)
    assert limiter.free_group_slots(GROUP) == 20
    clock.now += 1.2
    assert limiter.wait_time(ANN) == 0.0


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, ["short"]),
        ("", 10, []),
        ("   \n ", 10, []),
        ("line one\nline two", 12, ["line one", "line two"]),
        ("alpha beta gamma", 11, ["alpha beta", "gamma"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        ("😀😀😀", 3, ["😀", "😀", "😀"]),  # two UTF-16 units each, never halved
        ("ab😀cd", 3, ["ab", "😀c", "d"]),
        ("e\u0301e\u0301e\u0301", 3, ["e\u0301", "e\u0301", "e\u0301"]),
    ],
)
def test_split_text(text: str, limit: int, expected: list[str]) -> None:
    assert split_text(text, limit) == expected


def test_split_text_keeps_every_word_in_order_within_telegrams_limit() -> None:
    words = [f"w{n}{'😀' if n % 7 == 0 else ''}" for n in range(3000)]
    text = "\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
    chunks = split_text(text)
    assert len(chunks) > 1
    assert all(utf16_len(chunk) <= MAX_TEXT for chunk in chunks)
    assert " ".join(chunks).split() == words


def test_escaping_and_titles() -> None:
    assert escape(HOSTILE) == (
        "&lt;b&gt;&amp;amp; &lt;script&gt;alert('x')&lt;/script&gt; &amp; 'quotes' \"too\""
    )
    assert topic_title(123, "pro", "Ann") == "#123 · PRO · Ann"
    assert topic_title(5, "pro", "Ann", "due Mon 20:00") == "#5 · PRO · due Mon 20:00 · Ann"
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert sla_state(now + timedelta(days=3), now) == "due Mon 12:00"
    assert sla_state(now, now) == "🔴 BREACHED"
    assert sla_state(None, now) == "answered"
    assert topic_title(7, "basic", "") == "#7 · BASIC"
    long = topic_title(7, "basic", "Ann " * 100)
    assert utf16_len(long) <= 128 and long.endswith("…") and long.startswith("#7 · BASIC · Ann")
    assert clip("abcdef", 4) == "abc…"


def test_card_text_is_bold_header_then_escaped_message_within_the_limit() -> None:
    facts = CardFacts(
        number=12,
        plan="pro",
        channel="telegram",
        customer="Ann <Admin>",
        due_at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
    )
    card = card_text(facts, HOSTILE, attachments=2)
    header, body = card.split("\n", 1)
    assert (
        header == "<b>🎫 #12 · PRO · telegram · Ann &lt;Admin&gt; · due Tue 24 Nov, 09:00 UTC</b>"
    )
    assert body == escape(HOSTILE) + "\n📎 2 attachments"
    huge = card_text(facts, "x" * 10_000)
    assert utf16_len(html.unescape(re.sub(r"</?b>", "", huge))) == MAX_TEXT
    mail = card_text(replace(facts, channel="email", subject="Refund <please>"), "Hi")
    assert mail.split("\n")[1:] == ["<i>Refund &lt;please&gt;</i>", "Hi"]
    long_mail = card_text(replace(facts, subject="s" * 300), "y" * 10_000)
    assert utf16_len(html.unescape(re.sub(r"</?[bi]>", "", long_mail))) == MAX_TEXT


@pytest.mark.parametrize("count", [1, 10, 60, 150])
def test_digest_lines_shrink_to_fit_one_message(count: int) -> None:
    lines = [
        digest_line("💬", 1000 + n, f"Customer {n}", f"message {n} " + "blah " * 200)
        for n in range(count)
    ]
    fits = digest_capacity(lines)
    assert 1 <= fits <= count
    text = digest_text(lines[:fits])
    plain = re.sub(r"</?b>", "", text)
    assert utf16_len(plain) <= MAX_TEXT
    assert all(f"#{1000 + n} · Customer {n}: message {n}" in text for n in range(fits))
    if count <= 60:
        assert fits == count


def test_one_attachment_takes_the_text_as_caption_when_it_fits() -> None:
    photo = Attachment("photo", "FILE").to_json()
    assert [
        (p.text, bool(p.attachment)) for p in parts_of({"text": "hi", "attachments": [photo]})
    ] == [("hi", True)]
    long = parts_of({"text": "x " * 700, "attachments": [photo]})
    assert [bool(p.attachment) for p in long] == [False, True]
    assert parts_of({"text": "", "attachments": []}) == []
