"""What `/search` makes of its argument, the FTS5 expression it sends, and topic links."""

from __future__ import annotations

import pytest

from bot.console_search import message_link
from bot.store import Place
from supportbot.schema import models_only
from tickets.search import QueryKind, SearchQuery, fts5_match, is_search_object, parse_query


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("#12", SearchQuery(QueryKind.NUMBER, "12")),
        (" A@B.org ", SearchQuery(QueryKind.EMAIL, "a@b.org")),
        ("f" * 64, SearchQuery(QueryKind.TX, "f" * 64)),
        ("0x" + "AB" * 32, SearchQuery(QueryKind.TX, "0x" + "AB" * 32)),
        ("Refund, please!", SearchQuery(QueryKind.TEXT, "refund please")),
        ("#12 refund", SearchQuery(QueryKind.TEXT, "12 refund")),
        ("a@b", SearchQuery(QueryKind.TEXT, "a b")),
        ("abc123", SearchQuery(QueryKind.TEXT, "abc123")),  # short hex-ish words are words
        ("Überweisung fehlt", SearchQuery(QueryKind.TEXT, "überweisung fehlt")),
        (
            "one two three four five six seven eight nine",
            SearchQuery(QueryKind.TEXT, "one two three four five six seven eight"),
        ),
    ],
)
def test_query_kinds(raw: str, expected: SearchQuery) -> None:
    assert parse_query(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "?!", "x" * 301, '"" *'])
def test_queries_with_nothing_to_search_are_refused(raw: str) -> None:
    assert parse_query(raw) is None


def test_fts5_expression_quotes_every_word() -> None:
    assert fts5_match(["tron", "near"]) == '"tron" "near"'
    assert fts5_match(['a"b']) == '"a""b"'


def test_links_point_at_the_topic_else_the_card() -> None:
    assert message_link(-1001234567890, Place(42, 7)) == "https://t.me/c/1234567890/42"
    assert message_link(-1001234567890, Place(None, 7)) == "https://t.me/c/1234567890/7"
    assert message_link(-1001234567890, Place()) is None


def test_search_structures_are_left_out_of_the_schema_check() -> None:
    for name in ("messages_fts", "messages_fts_data", "tickets_fts_idx", "ix_messages_search"):
        assert is_search_object(name)
        assert not models_only(None, name, "table", True, None)
    for other in ("messages", "ix_messages_ticket_id", None):
        assert not is_search_object(other)
    assert models_only(None, "messages", "table", True, None)
