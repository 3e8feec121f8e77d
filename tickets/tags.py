"""Tags agents put on tickets: what a word becomes, and how many a ticket may carry (pure)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from tickets.errors import InvalidAction

TAG_LENGTH = 32  # characters of one tag
TAGS_PER_TICKET = 10
_WORD = re.compile(r"[^\W_](?:[\w-]*[^\W_])?")


def normalise_tag(word: str) -> str:
    """`#Billing` → `billing`: NFKC, lower case; letters, digits, `-` `_` inside; else an error."""
    tag = unicodedata.normalize("NFKC", word).strip().removeprefix("#").casefold()
    if not tag:
        raise InvalidAction("an empty tag says nothing")
    if len(tag) > TAG_LENGTH:
        raise InvalidAction(f"a tag has at most {TAG_LENGTH} characters: {tag[:TAG_LENGTH]}…")
    if not _WORD.fullmatch(tag):
        raise InvalidAction(
            f"a tag is one word of letters and digits (with - or _ inside): {tag!r}"
        )
    return tag


def merged_tags(existing: Sequence[str], words: Iterable[str]) -> tuple[list[str], list[str]]:
    """The ticket's tags after adding `words` (sorted), and those that are new; over the bound
    nothing is added and the error says how many are left."""
    have = set(existing)
    new: list[str] = []
    for word in words:
        tag = normalise_tag(word)
        if tag not in have and tag not in new:
            new.append(tag)
    if len(have) + len(new) > TAGS_PER_TICKET:
        room = TAGS_PER_TICKET - len(have)
        raise InvalidAction(
            f"a ticket carries at most {TAGS_PER_TICKET} tags; this one has room for {room} more"
        )
    return sorted(have | set(new)), new
