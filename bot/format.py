"""Text for Telegram: HTML escaping, Telegram's length rules, topic titles, cards and digests.

Telegram measures text in UTF-16 code units *after* parsing the markup, so `&amp;` counts as one
unit and an emoji outside the Basic Multilingual Plane as two. Long text is therefore split as
plain text first, and each chunk is escaped and marked up afterwards.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_TOPIC_TITLE = 128
ELLIPSIS = "…"
# Digest lines never shrink below this many units of excerpt.
MIN_EXCERPT = 24
# Delivery failures and quarantine reports say why; their lines keep at least this much.
MIN_IMPORTANT = 160
NAME_IN_LINE = 24

_SPACES = re.compile(r"\s+")
_TAGS = re.compile(r"<[^>]+>")
_JOINERS = frozenset("\u200d")
_EXTENDERS = frozenset("\u200d\ufe0e\ufe0f\u20e3")
_GRAPHEME_BACKOFF = 32


def escape(text: str) -> str:
    """Make user-supplied text safe inside HTML parse mode (quotes need no escaping there)."""
    return html.escape(text, quote=False)


def utf16_len(text: str) -> int:
    """The length Telegram counts: UTF-16 code units."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def fits_caption(text: str) -> bool:
    """Whether plain text can be a media caption (1,024 units)."""
    return utf16_len(text) <= MAX_CAPTION


def one_line(text: str) -> str:
    """Collapse all whitespace, so text fits a single line of a title or digest."""
    return _SPACES.sub(" ", text).strip()


def _fit(text: str, limit: int) -> int:
    """The number of leading characters of `text` that fit in `limit` UTF-16 units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def _safe_cut(text: str, cut: int) -> int:
    """Move a cut left so it never splits a surrogate pair or a character from its modifiers."""
    for candidate in range(cut, max(cut - _GRAPHEME_BACKOFF, 0), -1):
        if candidate >= len(text) or _splittable(text[candidate - 1], text[candidate]):
            return candidate
    return cut


def _splittable(before: str, after: str) -> bool:
    return not (
        0xD800 <= ord(before) <= 0xDBFF
        or before in _JOINERS
        or after in _EXTENDERS
        or unicodedata.combining(after)
        or 0x1F3FB <= ord(after) <= 0x1F3FF
    )


def clip(text: str, limit: int) -> str:
    """Shorten text to `limit` UTF-16 units, marking the cut with an ellipsis."""
    if utf16_len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = _safe_cut(text, _fit(text, limit - 1))
    return text[:cut].rstrip() + ELLIPSIS


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split plain text into chunks Telegram accepts, at line breaks, else spaces, else anywhere.

    The whitespace a chunk is split at is dropped (Telegram trims it anyway); chunks that would
    hold only whitespace are left out, since Telegram refuses empty messages.
    """
    if limit < 1:
        raise ValueError("a chunk must hold at least one unit")
    chunks: list[str] = []
    rest = text
    while (cut := _fit(rest, limit)) < len(rest):
        window = rest[:cut]
        at = _boundary(window)
        if at > 0:
            chunk, rest = rest[:at], rest[at + 1 :]
        else:
            cut = _safe_cut(rest, cut)
            chunk, rest = rest[:cut], rest[cut:]
        if chunk.strip():
            chunks.append(chunk)
    if rest.strip():
        chunks.append(rest)
    return chunks


def _boundary(window: str) -> int:
    """Where to split a too-long window: its last line break, or last space, if not too early."""
    half = len(window) // 2
    newline = window.rfind("\n")
    if newline >= half:
        return newline
    space = max(window.rfind(" "), window.rfind("\t"), newline)
    if space >= half:
        return space
    return max(space, 0)


def sla_state(due_at: datetime | None, now: datetime, *, at_risk: bool = False) -> str:
    """A ticket's SLA state in a few characters: `due Mon 20:00`, `BREACHED`, `answered`."""
    if due_at is None:
        return "answered"
    if due_at <= now:
        return "🔴 BREACHED"
    due = "due " + due_at.astimezone(UTC).strftime("%a %H:%M")
    return f"🟠 {due}" if at_risk else due


def topic_title(
    number: int, plan: str, customer: str, state: str = "", tags: Sequence[str] = ()
) -> str:
    """A forum topic's title, e.g. `#123 · PRO · due Mon 20:00 · Ann · 🏷 billing` (at most 128
    characters; the tags keep up to 48 of them, the name gets the rest)."""
    head = f"#{number} · {plan.upper()}" + (f" · {state}" if state else "")
    tail = f" · {tag_line(tags, 48)}" if tags else ""
    name = one_line(customer)
    if not name:
        return head + tail
    room = MAX_TOPIC_TITLE - utf16_len(head) - utf16_len(tail) - len(" · ")
    return f"{head} · {clip(name, room)}{tail}" if room > 1 else head + tail


def tag_line(tags: Sequence[str], room: int) -> str:
    """Tags as cards and titles show them: `🏷 billing refund`, clipped to `room`."""
    return clip("🏷 " + " ".join(tags), room)


def due_label(due_at: datetime | None) -> str:
    """A due time as agents read it on a card: `due Tue 24 Nov, 09:00 UTC`."""
    if due_at is None:
        return "not waiting"
    return "due " + due_at.astimezone(UTC).strftime("%a %d %b, %H:%M UTC")


@dataclass(frozen=True)
class CardFacts:
    """What a ticket's card shows in its bold header line."""

    number: int
    plan: str
    channel: str
    customer: str
    due_at: datetime | None
    marker: str = "🎫"
    subject: str = ""
    identity: str = ""  # who the customer is and how sure we are (accounts.lookups)
    tags: tuple[str, ...] = ()

    def header(self) -> str:
        """The card's first line: marker, number, plan, channel, customer, due time and tags."""
        name = clip(one_line(self.customer), 64) or "unknown customer"
        parts = [f"{self.marker} #{self.number}", self.plan.upper(), self.channel, name]
        tags = [tag_line(self.tags, 200)] if self.tags else []
        return " · ".join([*parts, due_label(self.due_at), *tags])


def card_text(facts: CardFacts, body: str, *, attachments: int = 0) -> str:
    """A ticket's card in HTML: a bold header line, then the customer's message, within 4,096."""
    header = facts.header()
    subject = clip(one_line(facts.subject), 300)
    footer = (
        f"\n📎 {attachments} attachment{'s' if attachments != 1 else ''}" if attachments else ""
    )
    room = MAX_TEXT - utf16_len(header) - 1 - utf16_len(footer)
    room -= utf16_len(subject) + 1 if subject else 0
    identity = clip(one_line(facts.identity), 300)
    room -= utf16_len(identity) + 1 if identity else 0
    text = clip(body.strip(), room) or "(no text)"
    subject_line = f"<i>{escape(subject)}</i>\n" if subject else ""
    identity_line = f"{escape(identity)}\n" if identity else ""
    return f"<b>{escape(header)}</b>\n{identity_line}{subject_line}{escape(text)}{escape(footer)}"


def notice_html(text: str, mentions: Sequence[Sequence[object]] = ()) -> str:
    """A plain notice as HTML: escaped, clipped to one message, then any people it mentions."""
    tail = mentions_html(mentions)
    return (escape(clip(text.strip(), MAX_TEXT - shown_len(tail))) or "…") + tail


def shown_len(html_text: str) -> int:
    """How long HTML is once Telegram has parsed it (UTF-16 units of the visible text)."""
    return utf16_len(html.unescape(_TAGS.sub("", html_text)))


def mentions_html(mentions: Sequence[Sequence[object]]) -> str:
    """Links that notify Telegram users, from `[telegram_id, name]` pairs (bad pairs skipped)."""
    links = []
    for mention in mentions:
        if len(mention) != 2:
            continue
        user, name = mention
        if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
            continue
        label = clip(one_line(str(name)), 64) or "agent"
        links.append(f'<a href="tg://user?id={user}">{escape(label)}</a>')
    return ("\n" + " ".join(links)) if links else ""


@dataclass(frozen=True)
class DigestLine:
    """One notice inside a digest: a fixed lead (`🆕 #123 · Ann: `) and text to excerpt."""

    lead: str
    text: str
    important: bool = False

    def render(self, excerpt: int) -> str:
        """The line with its text cut to `excerpt` units (failures keep more: they say why)."""
        room = max(excerpt, MIN_IMPORTANT) if self.important else excerpt
        return self.lead + clip(one_line(self.text), room)


def digest_line(
    marker: str,
    ticket: int | None,
    customer: str,
    text: str,
    *,
    files: int = 0,
    important: bool = False,
) -> DigestLine:
    """A compact digest line, `💬 #123 · Ann: excerpt…`, with the customer name kept short."""
    lead = f"{marker} #{ticket}" if ticket is not None else marker
    name = clip(one_line(customer), NAME_IN_LINE)
    lead += f" · {name}" if name else ""
    lead += f" 📎{files}: " if files else ": "
    return DigestLine(lead=lead, text=text, important=important)


def digest_heading(count: int) -> str:
    """The bold first line of a digest."""
    updates = f"{count} update{'s' if count != 1 else ''}"
    return f"📥 {updates} at once, grouped to stay within Telegram's limits"


def _digest_size(lines: Sequence[DigestLine], excerpt: int) -> int:
    heading = utf16_len(digest_heading(len(lines)))
    return heading + sum(1 + utf16_len(line.render(excerpt)) for line in lines)


def digest_capacity(lines: Sequence[DigestLine], limit: int = MAX_TEXT) -> int:
    """How many of the leading lines fit one digest, each with at least the minimum excerpt."""
    count = 0
    size = 0
    for line in lines:
        size += 1 + utf16_len(line.render(MIN_EXCERPT))
        heading = utf16_len(digest_heading(count + 1))
        if size + heading > limit:
            break
        count += 1
    return count


def digest_text(lines: Sequence[DigestLine], limit: int = MAX_TEXT) -> str:
    """One HTML message listing the lines, their excerpts as long as the limit allows."""
    if not lines:
        raise ValueError("a digest lists at least one notice")
    low, high = MIN_EXCERPT, limit
    while low < high:  # the longest excerpt that still fits
        middle = (low + high + 1) // 2
        if _digest_size(lines, middle) <= limit:
            low = middle
        else:
            high = middle - 1
    body = "\n".join(escape(line.render(low)) for line in lines)
    return f"<b>{escape(digest_heading(len(lines)))}</b>\n{body}"
