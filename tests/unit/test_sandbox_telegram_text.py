"""The local Bot API server's pure parts: entities, HTML and MarkdownV2 parsing, rate windows."""

from __future__ import annotations

import pytest

from sandbox.telegram import RateLimits
from sandbox.telegram.entities import detect_entities, render_text
from sandbox.telegram.errors import ApiError
from sandbox.telegram.limits import RateLimiter, Window


def test_rate_limiter_sliding_windows() -> None:
    limiter = RateLimiter(RateLimits(overall=Window(3, 1.0), private_chat=None, group_chat=None))
    assert [limiter.acquire(chat, "private", 0.0) for chat in (1, 2, 3)] == [0, 0, 0]
    assert limiter.acquire(4, "private", 0.5) == 1
    assert limiter.acquire(4, "private", 1.0) == 0  # the first slot expired
    group = RateLimiter(RateLimits(overall=None, private_chat=None, group_chat=Window(2, 60.0)))
    assert group.acquire(-1, "group", 0.0) == 0
    assert group.acquire(-1, "group", 10.0) == 0
    assert group.acquire(-1, "group", 10.5) == 50  # waits for the message sent at t=0
    assert group.acquire(-2, "group", 10.5) == 0  # another group has its own window


def test_html_parser_entities_use_utf16_offsets() -> None:
    text, entities = render_text(
        '😀 <b>bold <i>both</i></b> <a href="https://x.org/?a=1&amp;b=2">link</a> '
        '<pre><code class="language-python">x = 1</code></pre> <tg-spoiler>s</tg-spoiler>',
        "HTML",
        None,
    )
    assert text == "😀 bold both link x = 1 s"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 9},
        {"type": "italic", "offset": 8, "length": 4},
        {"type": "text_link", "url": "https://x.org/?a=1&b=2", "offset": 13, "length": 4},
        {"type": "pre", "language": "python", "offset": 18, "length": 5},
        {"type": "spoiler", "offset": 24, "length": 1},
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("*bold", "Can't find end of Bold entity at byte offset 0"),
        ("1 + 1", "Character '+' is reserved"),
        ("*a _b* c_", "Can't find end of Italic entity"),
        ("[link](http://x", "Can't find end of a URL"),
    ],
)
def test_markdown_v2_errors(source: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        render_text(source, "MarkdownV2", None)
    assert caught.value.status == 400
    assert caught.value.description.startswith("Bad Request: can't parse entities: ")
    assert message in caught.value.description


def test_markdown_v2_entities() -> None:
    text, entities = render_text(
        "*b* _i_ __u__ ~s~ ||h|| `c` [l](https://x.org/a\\)b) \\*not\\* 1\\.5\n>quote",
        "MarkdownV2",
        None,
    )
    assert text == "b i u s h c l *not* 1.5\nquote"
    assert [(e["type"], e["offset"], e["length"]) for e in entities] == [
        ("bold", 0, 1),
        ("italic", 2, 1),
        ("underline", 4, 1),
        ("strikethrough", 6, 1),
        ("spoiler", 8, 1),
        ("code", 10, 1),
        ("text_link", 12, 1),
        ("blockquote", 24, 5),
    ]
    assert entities[6]["url"] == "https://x.org/a)b"


def test_detected_entities() -> None:
    found = detect_entities(
        "/close@supportbot_test 12 for @ann_lee, see https://x.org/t/1. #urgent"
    )
    assert [(e["type"], e["offset"], e["length"]) for e in found] == [
        ("bot_command", 0, 22),
        ("mention", 30, 8),
        ("url", 44, 17),
        ("hashtag", 63, 7),
    ]
