"""Posting into the agents' group: ticket places (topic and card), posts in them, copies, digests.

Every message is paced by the limiter first and recorded in `agent_posts` as soon as Telegram
has it, so a crash or a retry never loses track of a topic or card that already exists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import telegram
from telegram import InputFile, LinkPreviewOptions, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest

from bot.buttons import ButtonSigner
from bot.format import CardFacts, card_text, escape, sla_state, topic_title
from bot.limits import TelegramLimiter
from bot.sending import send_file
from bot.store import CARD, POST, TOPIC, MessageFacts, Place, PlaceBook, TicketFacts

log = logging.getLogger(__name__)

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
_PLACE_ERRORS = ("thread", "topic", "forum", "not enough rights")


class OutOfBudget(Exception):
    """No slot is free soon enough: the row waits in the outbox instead."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"no group slot for {wait:.1f} s")
        self.wait = wait


@dataclass
class FeedStats:
    """What the feed has done since it started (for logs, tests and benchmarks)."""

    single: int = 0
    digests: int = 0
    digested: int = 0
    places: int = 0
    backlog_places: int = 0


class GroupPoster:
    """Sends to one agents' group within its budget, and remembers where each ticket lives."""

    def __init__(
        self,
        bot: telegram.Bot,
        limiter: TelegramLimiter,
        book: PlaceBook,
        *,
        forum: bool,
        signer: ButtonSigner,
        patience: float,
    ) -> None:
        self._bot = bot
        self._limiter = limiter
        self._book = book
        self.chat_id = book.chat_id
        self.forum = forum
        self._signer = signer
        self._patience = patience
        self.places: dict[int, Place] = {}
        self.stats = FeedStats()

    def ready(self, place: Place) -> bool:
        """Whether the place is complete: a card, and a topic in a forum group."""
        return place.card_id is not None and (not self.forum or place.thread_id is not None)

    def place_of(self, ticket: TicketFacts) -> Place:
        """The ticket's place as last known (made earlier in this round, or as loaded)."""
        return self.places.get(ticket.number, ticket.place)

    def place_cost(self, place: Place) -> int:
        """Group messages it takes to complete a place (a new topic counts, as on Telegram)."""
        if self.ready(place):
            return 0
        return 1 + (1 if self.forum and place.thread_id is None else 0)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Send one group message inside the block, within `patience`; else `OutOfBudget`."""
        wait = self._limiter.wait_time(self.chat_id)
        if wait > self._patience:
            raise OutOfBudget(wait)
        async with self._limiter.sending(self.chat_id):
            yield

    async def create_place(
        self, ticket: TicketFacts, body: MessageFacts | None, marker: str
    ) -> Place:
        """The ticket's topic (forum groups) and card; each is recorded as soon as it exists.

        A new topic is recorded while its card is being sent (the card is what shows the
        customer's message, so it does not wait for the database), and always before the card.
        """
        place = self.place_of(ticket)
        thread = place.thread_id if self.forum else None
        recording: asyncio.Task[None] | None = None
        if self.forum and thread is None:
            state = sla_state(ticket.due_at, datetime.now(UTC))
            title = _title(ticket, state)
            async with self.slot():
                topic = await self._bot.create_forum_topic(self.chat_id, title)
            thread = topic.message_thread_id
            recording = asyncio.create_task(self._book.record(ticket.number, TOPIC, thread, thread))
            self.places[ticket.number] = Place(thread, None)
        keyboard = self._signer.card_keyboard(
            ticket.number, claimed=ticket.claimed, closed=ticket.closed
        )
        try:
            async with self.slot():
                card = await self._bot.send_message(
                    self.chat_id,
                    _card_html(ticket, body, marker),
                    parse_mode=ParseMode.HTML,
                    message_thread_id=thread,
                    reply_markup=keyboard,
                    link_preview_options=NO_PREVIEW,
                )
        finally:
            if recording is not None:
                await recording
        await self._book.record(ticket.number, CARD, card.message_id, thread)
        place = self.places[ticket.number] = Place(thread, card.message_id)
        self.stats.places += 1
        return place

    async def restate(self, ticket: TicketFacts, body: MessageFacts | None, state: str) -> None:
        """Show a ticket's SLA state where agents look: its topic's title and its card.

        A renamed topic posts a service message, so the rename takes a slot (or is skipped
        with `OutOfBudget`); a card edit is not a new message.
        """
        place = self.place_of(ticket)
        if place.card_id is not None:
            keyboard = self._signer.card_keyboard(
                ticket.number, claimed=ticket.claimed, closed=ticket.closed
            )
            marker = state.split(" ", 1)[0] if state.startswith(("🔴", "🟠")) else "🎫"
            await _unless_unchanged(
                self._bot.edit_message_text(
                    _card_html(ticket, body, marker),
                    self.chat_id,
                    place.card_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=keyboard,
                    link_preview_options=NO_PREVIEW,
                )
            )
        if self.forum and place.thread_id is not None:
            title = _title(ticket, state)
            async with self.slot():
                await _unless_unchanged(
                    self._bot.edit_forum_topic(self.chat_id, place.thread_id, name=title)
                )

    async def lost_place(self, number: int, error: BadRequest) -> bool:
        """A refusal about the ticket's topic or card: forget that place, so a new one is made.

        Returns whether the error was about the place at all.
        """
        reason = error.message.lower()
        if not any(word in reason for word in _PLACE_ERRORS):
            return False
        log.warning("agents' feed: the place of #%s is gone (%s); making a new one", number, error)
        if "not a forum" in reason and self.forum:
            log.warning("agents' feed: chat %s has no topics; using cards instead", self.chat_id)
            self.forum = False
        await self._book.forget_place(number)
        self.places[number] = Place()
        return True

    def _where(self, place: Place) -> tuple[int | None, ReplyParameters | None]:
        if self.forum and place.thread_id is not None:
            return place.thread_id, None
        if place.card_id is None:
            return None, None
        return None, ReplyParameters(place.card_id, allow_sending_without_reply=True)

    async def post(self, place: Place, number: int, html_text: str) -> int:
        """Post HTML into a ticket's topic, or as a reply to its card; returns the message id."""
        thread, reply = self._where(place)
        async with self.slot():
            message = await self._bot.send_message(
                self.chat_id,
                html_text,
                parse_mode=ParseMode.HTML,
                message_thread_id=thread,
                reply_parameters=reply,
                link_preview_options=NO_PREVIEW,
            )
        await self._book.record(number, POST, message.message_id, thread)
        return message.message_id

    async def plain(self, html_text: str, number: int | None) -> int:
        """Post HTML to the group itself (its General topic): digests, and notices with no place."""
        async with self.slot():
            message = await self._bot.send_message(
                self.chat_id, html_text, parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW
            )
        if number is not None:
            await self._book.record(number, POST, message.message_id, None)
        return message.message_id

    async def full_text(
        self, place: Place | None, ticket: TicketFacts, message: MessageFacts
    ) -> None:
        """The whole text of a customer message too long for its notice, as a `.txt` file.

        It goes into the ticket's topic or under its card (or, without a place, into the
        group), one group message however long the text: splitting 14,000 characters would
        take four of the group's 20 a minute.
        """
        text = message.text.strip()
        data = f"#{ticket.number} · {ticket.customer}\n\n{text}\n".encode()
        caption = f"📄 #{ticket.number}: the whole message, {len(text):,} characters"
        name = f"ticket-{ticket.number}-message-{message.id}.txt"
        await self._post_file(place, ticket.number, name, data, caption)

    async def raw_source(
        self, place: Place | None, ticket: TicketFacts, message: MessageFacts, raw: bytes
    ) -> None:
        """The raw source of a mail with broken MIME, as an `.eml` file beside its notice: the
        notice shows the best text decoded from it, the file shows everything."""
        caption = f"📄 #{ticket.number}: the mail's raw source (its MIME structure was broken)"
        name = f"ticket-{ticket.number}-message-{message.id}.eml"
        await self._post_file(place, ticket.number, name, raw, caption)

    async def mailed_file(
        self, place: Place, number: int, name: str, data: bytes, caption: str, *, photo: bool
    ) -> int:
        """A file a customer mailed, into the ticket's place: an image as a photo, else a file."""
        return await self._post_file(place, number, name, data, caption, photo=photo)

    async def _post_file(
        self,
        place: Place | None,
        number: int,
        name: str,
        data: bytes,
        caption: str,
        *,
        photo: bool = False,
    ) -> int:
        """Post a file (or a photo) into the ticket's place, or the group without one, in budget."""
        thread, reply = self._where(place) if place is not None else (None, None)
        send = self._bot.send_photo if photo else self._bot.send_document
        async with self.slot():
            sent = await send(
                self.chat_id,
                InputFile(data, filename=name),
                caption=escape(caption),
                parse_mode=ParseMode.HTML,
                message_thread_id=thread,
                reply_parameters=reply,
            )
        await self._book.record(number, POST, sent.message_id, thread)
        return sent.message_id

    async def copy(self, message: MessageFacts, place: Place, number: int) -> None:
        """Show the customer's original (photo, file, voice…) in the ticket's place."""
        origin = message.telegram_origin()
        if origin is None:
            return
        thread, reply = self._where(place)
        try:
            async with self.slot():
                copied = await self._bot.copy_message(
                    self.chat_id,
                    origin[0],
                    origin[1],
                    message_thread_id=thread,
                    reply_parameters=reply,
                )
        except BadRequest as error:
            log.warning("agents' feed: could not copy %s (%s); sending by file_id", origin, error)
        else:
            await self._book.record(number, POST, copied.message_id, thread)
            return
        for attachment in message.attachments:
            try:
                async with self.slot():
                    sent = await send_file(
                        self._bot,
                        self.chat_id,
                        attachment,
                        thread_id=thread,
                        reply_to=reply.message_id if reply else None,
                    )
            except BadRequest as error:
                log.warning("agents' feed: a file of #%s cannot be shown: %s", number, error)
                continue
            await self._book.record(number, POST, sent.message_id, thread)


UNVERIFIED = "⚠️ sender not verified (SPF/DKIM/DMARC failed)"


def _title(ticket: TicketFacts, state: str) -> str:
    """The topic's title; an unverified sender's ticket says so before the customer's name."""
    customer = f"⚠️ unverified · {ticket.customer}" if ticket.unverified else ticket.customer
    return topic_title(ticket.number, ticket.plan, customer, state, ticket.tags)


def _card_html(ticket: TicketFacts, body: MessageFacts | None, marker: str) -> str:
    identity = ticket.identity
    if ticket.unverified:  # with or without an account matched
        warning = f"{UNVERIFIED}: verify before any account action, then /vouch {ticket.number}"
        identity = f"{warning} · {identity}" if identity else warning
    facts = CardFacts(
        number=ticket.number,
        plan=ticket.plan,
        channel=ticket.channel,
        customer=ticket.customer,
        due_at=ticket.due_at,
        marker=marker,
        subject=ticket.subject,
        identity=identity,
        tags=ticket.tags,
    )
    return card_text(
        facts, body.text if body else "", attachments=len(body.attachments) if body else 0
    )


async def _unless_unchanged(edit: Awaitable[object]) -> None:
    """An edit to what is shown already is no error."""
    try:
        await edit
    except BadRequest as error:
        if "not modified" not in error.message.lower().replace("_", " "):
            raise
