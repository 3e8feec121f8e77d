"""The agents' feed: delivers agent notices into the agents' group without ever being refused.

Under light load each notice goes out on its own, into its ticket's place (a forum topic with a
card, or a card agents reply to), which is created on first use. A group takes only 20 messages
a minute (a new topic counts as one), so a new place is made only while what is left of the
budget could still carry a digest every few seconds until slots come free again: every
`calm_gap` seconds, or `max_gap` while new tickets arrive in a flood (then this holds for every
single notice). Otherwise pending notices are coalesced into digests: one message listing many
notices, one line each. Digests are spread evenly over the slots that are left
(`TelegramLimiter.spread_gap`), never sent back to back, so the group is never silent for long.
Tickets first seen in a digest get their place later through `place_backlog`, from spare budget
and only once no notice waits; so do topic titles and cards that a digested notice (an SLA state,
a plan change) left showing the old state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import telegram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.buttons import ButtonSigner
from bot.format import (
    MAX_TEXT,
    DigestLine,
    digest_capacity,
    digest_line,
    digest_text,
    escape,
    mentions_html,
    notice_html,
    shown_len,
    sla_state,
)
from bot.limits import TelegramLimiter
from bot.mail_files import as_photo, caption, listing_html, size_text, split_files
from bot.outage import GroupAlarm, GroupOutage
from bot.posting import FeedStats, GroupPoster, OutOfBudget
from bot.sending import outcome_for, quiet_httpx
from bot.store import MessageFacts, Place, PlaceBook, TicketFacts
from tickets.customer_messages import MAIL_FILES
from tickets.mailed_files import MailedFile, mailed_files
from tickets.outbox import Deferred, Delivered, Failed, OutboxItem, Outcome, Report
from tickets.ports import Clock, Renderer

log = logging.getLogger(__name__)

MARKERS = {
    "opened": "🆕",
    "reopened": "♻️",
    "message": "💬",
    "edited": "✏️",
    "delivered": "✅",
    "delivery_failed": "⚠️",
    "quarantined": "🚫",
    "bounced": "↩️",
    "mail_health": "📮",
    "plan_changed": "⭐",
}
# Events about a customer message: a card made for one of them shows that message itself.
CARRIED = frozenset({"opened", "reopened", "message"})
CUSTOMER_TEXT = CARRIED | {"edited"}
IMPORTANT = frozenset(
    {
        "delivery_failed",
        "quarantined",
        "bounced",
        "mail_health",
        "sla_breach",
        "escalated",
        "billing_failed",
    }
)
# SLA states a watch notice puts on the ticket's topic title and card (see `GroupPoster.restate`).
AT_RISK = "sla_risk"
# A card made for a ticket after the fact (backlog, or for a notice it does not carry).
CARD_MARKER = "🎫"


@dataclass(frozen=True)
class _Notice:
    item: OutboxItem
    event: str
    ticket: TicketFacts | None
    message: MessageFacts | None
    report: Report

    @property
    def text(self) -> str:
        return str(self.item.payload.get("text") or "")

    @property
    def html(self) -> str:
        return notice_html(self.text, self.mentions)

    @property
    def mentions(self) -> list[list[object]]:
        found = self.item.payload.get("mentions")
        return [m for m in found if isinstance(m, list)] if isinstance(found, list) else []

    @property
    def carried(self) -> bool:
        return self.event in CARRIED and self.message is not None

    @property
    def copies(self) -> bool:
        m = self.message
        return self.carried and m is not None and bool(m.attachments) and bool(m.telegram_origin())

    @property
    def has_raw(self) -> bool:
        """Whether the notice's mail was broken MIME, whose raw source follows as `.eml`."""
        return self.item.payload.get("raw_source") is True and self.message is not None

    @property
    def shows_part(self) -> bool:
        """Whether the notice shows only the start of its message (the rest goes as a file)."""
        return bool(self.item.payload.get("truncated")) and self.message is not None


@dataclass
class _FileSteps:
    """A mail's files still to show: posts first, then one message listing the rest."""

    notice: _Notice
    posted: list[MailedFile]
    listed: list[MailedFile]
    done: int

    @property
    def total(self) -> int:
        return len(self.posted) + (1 if self.listed else 0)


@dataclass
class _Progress:
    """How far a notice got, saved with its row before each further message (see `keep`), so
    that a retry, even in another process after a crash, sends only what is still missing."""

    external_id: str | None = None
    notice_sent: bool = False
    copied: bool = False
    full_text: bool = False
    raw_source: bool = False
    unsaved: bool = field(default=False, compare=False)

    @classmethod
    def of(cls, item: OutboxItem) -> _Progress:
        """What earlier tries of the row saved."""
        state = item.progress or {}
        external_id = state.get("external_id")
        return cls(
            external_id=external_id if isinstance(external_id, str) else None,
            notice_sent=state.get("notice_sent") is True,
            copied=state.get("copied") is True,
            full_text=state.get("full_text") is True,
            raw_source=state.get("raw_source") is True,
        )

    def done(self, **steps: bool | str) -> None:
        """Note what just went out."""
        for name, value in steps.items():
            setattr(self, name, value)
        self.unsaved = True

    async def keep(self, notice: _Notice) -> None:
        """Save what went out so far, before another message of the same notice goes."""
        if self.unsaved:
            state = {
                "external_id": self.external_id,
                "notice_sent": self.notice_sent,
                "copied": self.copied,
                "full_text": self.full_text,
                "raw_source": self.raw_source,
            }
            await notice.report.progress(notice.item, state)
            self.unsaved = False


class AgentFeed:
    """The `Route.AGENTS` sender: notices into ticket places, or digests when the budget is short.

    Single notices (and `place_backlog`) spend slots only while at least `reserve` (and
    `backlog_reserve`) stay free; a new topic or card only while the rest could still carry a
    digest every `calm_gap` seconds until slots come free again; and once `flood` notices of
    tickets without a place arrived within `flood_window` seconds, any single only while
    digests could still go every `max_gap` seconds (a digest holds about 80 lines, so one every
    3.9 s keeps up with 20 notices a second). Digests, and notices sent under pressure, go one
    `TelegramLimiter.spread_gap` after the group's previous message.
    """

    def __init__(
        self,
        bot: telegram.Bot,
        limiter: TelegramLimiter,
        sessions: async_sessionmaker[AsyncSession],
        chat_id: int,
        forum: bool,
        signer: ButtonSigner,
        clock: Clock,
        *,
        reserve: int = 5,
        backlog_reserve: int = 10,
        max_gap: float = 3.9,
        calm_gap: float = 5.5,
        flood: int = 3,
        flood_window: float = 5.0,
        patience: float = 1.0,
        templates: Renderer | None = None,
    ) -> None:
        self.chat_id = chat_id
        self._limiter = limiter
        self._book = PlaceBook(sessions, chat_id, clock)
        self._sessions = sessions
        self._clock = clock
        self._group = GroupPoster(
            bot, limiter, self._book, forum=forum, signer=signer, patience=patience
        )
        self._reserve = reserve
        self._backlog_reserve = backlog_reserve
        self._max_gap = max_gap
        self._calm_gap = calm_gap
        self._flood = flood
        self._flood_window = flood_window
        self._unplaced_seen: dict[int, float] = {}  # notice row -> when first seen
        self._patience = patience
        self._lock = asyncio.Lock()
        # Tickets whose title and card still show an old state (a restating notice that went
        # out in a digest, or found no slot): ticket -> shown at risk. Done from spare budget.
        self._restates: dict[int, bool] = {}
        self._alarm = GroupAlarm(bot, limiter, sessions, chat_id, clock, templates)
        quiet_httpx()

    @property
    def outage(self) -> GroupOutage | None:
        """Whether the agents' group refuses the bot right now (403), since when and why."""
        return self._alarm.outage

    async def close(self) -> None:
        """Stop what is still going on in the background (admins being alerted)."""
        await self._alarm.close()

    @property
    def stats(self) -> FeedStats:
        """Counts of single notices, digests and places, since start."""
        return self._group.stats

    @property
    def forum(self) -> bool:
        """Whether tickets get forum topics (turned off if the group turns out to have none)."""
        return self._group.forum

    # -- the Sender protocol --------------------------------------------------------------

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None:
        """Deliver notices in order: each into its place while the budget allows, else digests.

        A customer's mailed files are never digested: their row goes on its own, in its turn.
        """
        if not items:
            return
        files_at = next((i for i, it in enumerate(items) if _files_row(it)), None)
        if files_at == 0:
            async with self._lock:
                await self._mail_files(items[0], report)
            return
        if files_at is not None:
            items = items[:files_at]  # the rest are handed back, and come again in order
        async with self._lock:
            wait = self._window_wait()
            if wait > 0:
                report.outcome(items[0], Deferred(after=wait))
                return
            notices = await self._notices(items, report)
            self._note_unplaced(notices)
            cost = sum(self._cost(n) for n in notices)
            placing = any(
                n.ticket is not None and self._group.place_cost(self._group.place_of(n.ticket))
                for n in notices
            )
            if self._affordable(cost, self._reserve, placing=placing):
                await self._one_by_one(notices)
                return
            if len(notices) == 1 and cost <= 1:  # a digest would cost the same slot
                wait = self._paced_wait()
                if wait > 0:
                    report.outcome(items[0], Deferred(after=wait))
                    return
                await self._one_by_one(notices)
                return
            for notice, outcome in zip(notices, await self._digest(notices), strict=False):
                report.outcome(notice.item, outcome)

    async def place_backlog(self, limit: int = 5) -> int:
        """Give tickets seen only in digests their topic or card, from spare budget only.

        Most urgent first; returns how many places were made. The channel calls it every few
        seconds; it does nothing while a notice waits, since digests need the budget first.
        """
        async with self._lock:
            if self.outage is not None or await self._book.notices_pending():
                return 0
            numbers = await self._book.unplaced(limit)
            facts = await self._book.tickets(numbers)
            self._group.places = {number: t.place for number, t in facts.items()}
            made = 0
            for number in numbers:
                ticket = facts.get(number)
                if ticket is None:
                    continue
                cost = self._group.place_cost(ticket.place)
                if not self._affordable(cost, self._backlog_reserve, placing=True):
                    break
                latest = await self._book.latest_customer_message(number)
                try:
                    await self._group.create_place(ticket, latest, CARD_MARKER)
                except OutOfBudget:
                    break
                except TelegramError as error:
                    log.warning("agents' feed: could not place #%s: %s", number, error)
                    break
                made += 1
            self.stats.backlog_places += made
            await self._restate_backlog(limit)
            return made

    async def _restate_backlog(self, limit: int) -> None:
        """Restate titles and cards left showing an old state, while spare budget allows."""
        numbers = list(self._restates)[:limit]
        facts = await self._book.tickets(numbers) if numbers else {}
        for number in numbers:
            ticket = facts.get(number)
            if ticket is None or ticket.closed:
                self._restates.pop(number, None)
                continue
            if not self._affordable(1, self._backlog_reserve, placing=False):
                return
            state = sla_state(ticket.due_at, self._clock(), at_risk=self._restates[number])
            try:
                body = await self._book.latest_customer_message(number)
                await self._group.restate(ticket, body, state)
            except (OutOfBudget, TelegramError) as error:
                log.warning(
                    "agents' feed: #%s keeps its old state shown for now: %s", number, error
                )
                return
            self._restates.pop(number, None)

    # -- deciding -------------------------------------------------------------------------

    async def _notices(self, items: Sequence[OutboxItem], report: Report) -> list[_Notice]:
        def message_id(item: OutboxItem) -> int | None:
            value = item.payload.get("message_id")
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        tickets, messages = await self._book.notice_facts(
            (i.ticket_id for i in items if i.ticket_id is not None),
            (m for i in items if (m := message_id(i)) is not None),
        )
        self._group.places = {number: t.place for number, t in tickets.items()}
        return [
            _Notice(
                item=item,
                event=str(item.payload.get("event") or ""),
                ticket=tickets.get(item.ticket_id) if item.ticket_id is not None else None,
                message=messages.get(m) if (m := message_id(item)) is not None else None,
                report=report,
            )
            for item in items
        ]

    def _cost(self, notice: _Notice) -> int:
        """Group messages a notice still needs on its own."""
        progress = _Progress.of(notice.item)
        if notice.ticket is None:
            return 0 if progress.notice_sent else 1
        cost = self._group.place_cost(notice.ticket.place)
        if not progress.notice_sent and not (cost and notice.carried):
            cost += 1
        if notice.copies and not progress.copied:
            cost += 1
        if notice.shows_part and not progress.full_text:
            cost += 1
        if notice.has_raw and not progress.raw_source:
            cost += 1
        return cost

    def _affordable(self, cost: int, keep: int, *, placing: bool) -> bool:
        """Whether `cost` slots can go now, leaving `keep` free and digests close enough.

        Outside a flood, notices that make no new place cost what their digest line would, so
        only the reserve applies to them; a new place must leave digests `calm_gap` apart.
        """
        free = self._limiter.free_group_slots(self.chat_id)
        if cost > free - keep:
            return False
        if self._flooding():
            gap = self._max_gap
        elif placing:
            gap = self._calm_gap
        else:
            return True
        return self._limiter.spread_gap(self.chat_id, spend=cost) <= gap

    def _note_unplaced(self, notices: Sequence[_Notice]) -> None:
        """Remember when notices of tickets still needing a place were first seen."""
        now = self._limiter.now()
        for notice in notices:
            ticket = notice.ticket
            if ticket is None or not self._group.place_cost(self._group.place_of(ticket)):
                continue
            self._unplaced_seen.setdefault(notice.item.id, now)
        horizon = now - self._flood_window
        for row_id, seen in list(self._unplaced_seen.items()):
            if seen < horizon:
                del self._unplaced_seen[row_id]

    def _flooding(self) -> bool:
        """Whether new tickets arrive faster than the group can give each its place."""
        horizon = self._limiter.now() - self._flood_window
        return sum(1 for seen in self._unplaced_seen.values() if seen >= horizon) >= self._flood

    def _window_wait(self) -> float:
        """Wait for the group's own window; the bot-wide one only if it is far off."""
        overall = self._limiter.overall_wait_time()
        group = self._limiter.chat_wait_time(self.chat_id)
        if group > 0:
            return max(group, overall)
        return overall if overall > self._patience else 0.0

    def _paced_wait(self) -> float:
        """How long until the next paced message: one spread gap after the group's last one."""
        wait = self._window_wait()
        if wait > 0:
            return wait
        due = self._limiter.last_sent(self.chat_id) + self._limiter.spread_gap(self.chat_id)
        return max(due - self._limiter.now(), 0.0)

    # -- one notice at a time -------------------------------------------------------------

    async def _one_by_one(self, notices: Sequence[_Notice]) -> None:
        """Each notice on its own, its outcome reported the moment it is known."""
        for notice in notices:
            progress = _Progress.of(notice.item)
            try:
                outcome = await self._deliver_notice(notice, progress)
            except OutOfBudget as short:
                outcome = Deferred(after=short.wait)
            if not isinstance(outcome, Delivered):
                await progress.keep(notice)  # what went out before the notice stopped
            notice.report.outcome(notice.item, outcome)
            if not isinstance(outcome, Delivered):
                break
            self.stats.single += 1

    async def _deliver_notice(self, notice: _Notice, progress: _Progress) -> Outcome:
        try:
            await self._attempt(notice, progress)
        except Forbidden as error:
            return Deferred(after=self._alarm.refused(error))
        except TelegramError as error:
            outcome = outcome_for(error)
            if isinstance(outcome, Failed):
                log.error("agents' feed: notice %s refused: %s", notice.item.id, error)
            return outcome
        self._alarm.posted()
        return Delivered(external_id=progress.external_id)

    async def _attempt(self, notice: _Notice, progress: _Progress) -> None:
        """Into the ticket's place; into a new one if that is gone; else to the group itself."""
        ticket = notice.ticket
        if ticket is None:
            if not progress.notice_sent:
                self._sent(progress, await self._group.plain(notice.html, None))
            return
        for last_try in (False, True):
            try:
                await self._in_place(notice, ticket, progress)
                return
            except BadRequest as error:
                if progress.notice_sent:  # only an extra (a copy) failed; the notice is out
                    log.warning("agents' feed: notice %s: %s", notice.item.id, error)
                    return
                if last_try or not await self._group.lost_place(ticket.number, error):
                    log.warning("agents' feed: #%s goes to the group: %s", ticket.number, error)
                    break
        self._sent(progress, await self._group.plain(notice.html, ticket.number))
        await self._full_text(notice, ticket, None, progress)

    def _sent(self, progress: _Progress, message_id: int | None) -> None:
        progress.done(notice_sent=True, external_id=f"{self.chat_id}:{message_id}")

    async def _in_place(self, notice: _Notice, ticket: TicketFacts, progress: _Progress) -> None:
        place = self._group.place_of(ticket)
        if not self._group.ready(place):
            carried = notice.message if notice.carried and not progress.notice_sent else None
            body = carried or await self._book.latest_customer_message(ticket.number)
            marker = MARKERS[notice.event] if carried else CARD_MARKER
            place = await self._group.create_place(ticket, body, marker)
            if carried is not None:
                self._sent(progress, place.card_id)
        if not progress.notice_sent:
            await progress.keep(notice)
            self._sent(progress, await self._group.post(place, ticket.number, notice.html))
            if notice.item.payload.get("restate"):
                await self._restate(notice, ticket)
        await self._full_text(notice, ticket, place, progress)
        if notice.copies and not progress.copied and notice.message is not None:
            await progress.keep(notice)
            await self._group.copy(notice.message, place, ticket.number)
            progress.done(copied=True)

    async def _full_text(
        self, notice: _Notice, ticket: TicketFacts, place: Place | None, progress: _Progress
    ) -> None:
        if notice.shows_part and not progress.full_text and notice.message is not None:
            await progress.keep(notice)
            await self._group.full_text(place, ticket, notice.message)
            progress.done(full_text=True)
        if notice.has_raw and not progress.raw_source and notice.message is not None:
            raw = await self._book.raw_source(notice.message.id)
            if raw is not None:
                await progress.keep(notice)
                await self._group.raw_source(place, ticket, notice.message, raw)
            progress.done(raw_source=True)

    async def _restate(self, notice: _Notice, ticket: TicketFacts) -> None:
        """Best effort: the notice is out; a title or card not updated now is next time."""
        at_risk = _shown_at_risk(notice)
        state = sla_state(ticket.due_at, self._clock(), at_risk=at_risk)
        try:
            body = await self._book.latest_customer_message(ticket.number)
            await self._group.restate(ticket, body, state)
        except (OutOfBudget, TelegramError) as error:
            log.warning("agents' feed: #%s keeps its old SLA state shown: %s", ticket.number, error)
            self._restates[ticket.number] = at_risk

    # -- mailed files -------------------------------------------------------------------------

    async def _mail_files(self, item: OutboxItem, report: Report) -> None:
        """Post a mail's files into its ticket's place, one group message each, paced; the
        number done is saved after each, so a retry posts only the rest."""
        [notice] = await self._notices([item], report)
        message_id = item.payload.get("message_id")
        files = (
            await mailed_files(self._sessions, message_id) if isinstance(message_id, int) else []
        )
        posted, listed = split_files(files)
        done = (item.progress or {}).get("files_done", 0)
        steps = _FileSteps(
            notice, posted, listed, done if isinstance(done, int) and done >= 0 else 0
        )
        try:
            outcome = await self._file_steps(steps)
        except OutOfBudget as short:
            outcome = Deferred(after=short.wait)
        except Forbidden as error:
            outcome = Deferred(after=self._alarm.refused(error))
        except TelegramError as error:
            outcome = outcome_for(error)
            if isinstance(outcome, Failed):
                log.error("agents' feed: mailed files (row %s) refused: %s", item.id, error)
        report.outcome(item, outcome)

    async def _file_steps(self, steps: _FileSteps) -> Outcome:
        ticket = steps.notice.ticket
        if ticket is None or steps.done >= steps.total:
            return Delivered(external_id=None)
        place = self._group.place_of(ticket)
        placing = self._group.place_cost(place)
        wait = self._window_wait()
        if wait > 0:
            return Deferred(after=wait)
        cost = steps.total - steps.done + placing
        one_at_a_time = not self._affordable(cost, self._reserve, placing=bool(placing))
        if one_at_a_time and (wait := self._paced_wait()) > 0:
            return Deferred(after=wait)
        if not self._group.ready(place):
            body = await self._book.latest_customer_message(ticket.number)
            place = await self._group.create_place(ticket, body, CARD_MARKER)
        while steps.done < steps.total:
            if steps.done < len(steps.posted):
                await self._post_file(place, ticket.number, steps.posted[steps.done])
            else:
                await self._group.post(
                    place, ticket.number, listing_html(ticket.number, steps.listed)
                )
            steps.done += 1
            await steps.notice.report.progress(steps.notice.item, {"files_done": steps.done})
            if one_at_a_time and steps.done < steps.total:
                return Deferred(after=max(self._paced_wait(), 0.1))
        self._alarm.posted()
        return Delivered(external_id=None)

    async def _post_file(self, place: Place, number: int, file: MailedFile) -> None:
        """One file: an image as a photo (as a document if Telegram will not take it so); a
        file Telegram refuses is said in its place rather than lost in silence."""
        assert file.data is not None
        text = caption(number, file)
        if as_photo(file):
            try:
                await self._group.mailed_file(
                    place, number, file.filename, file.data, text, photo=True
                )
                return
            except BadRequest as error:
                log.warning(
                    "agents' feed: %s of #%s not taken as a photo: %s", file.filename, number, error
                )
        try:
            await self._group.mailed_file(
                place, number, file.filename, file.data, text, photo=False
            )
        except BadRequest as error:
            name = f"{file.filename[:200]} ({size_text(file.size)})"
            why = escape(f"📎 #{number}: {name} could not be posted: {error.message}")
            await self._group.post(place, number, why)

    # -- digests --------------------------------------------------------------------------

    async def _digest(self, notices: Sequence[_Notice]) -> list[Outcome]:
        first = _Progress.of(notices[0].item)
        if first.notice_sent:  # out already; only an extra (a copy, the full text) was pending
            return [Delivered(external_id=first.external_id)]
        wait = self._paced_wait()
        if wait > 0:
            return [Deferred(after=wait)]
        lines = [self._line(notice) for notice in notices]
        limit = MAX_TEXT - shown_len(mentions_html(_mentioned(notices)))
        count = max(digest_capacity(lines, limit), 1)
        html_text = digest_text(lines[:count], limit) + mentions_html(_mentioned(notices[:count]))
        try:
            message_id = await self._group.plain(html_text, None)
        except OutOfBudget as short:
            return [Deferred(after=short.wait)]
        except Forbidden as error:
            return [Deferred(after=self._alarm.refused(error))]
        except TelegramError as error:
            return [outcome_for(error)]
        self._alarm.posted()
        self.stats.digests += 1
        self.stats.digested += count
        for notice in notices[:count]:
            if notice.ticket is not None and notice.item.payload.get("restate"):
                self._restates[notice.ticket.number] = _shown_at_risk(notice)
        external_id = f"{self.chat_id}:{message_id}"
        return [Delivered(external_id=external_id) for _ in range(count)]

    def _line(self, notice: _Notice) -> DigestLine:
        ticket, message = notice.ticket, notice.message
        important = notice.event in IMPORTANT
        if ticket is None or message is None or notice.event not in CUSTOMER_TEXT:
            return DigestLine(lead="", text=notice.text, important=important)
        sender = notice.item.payload.get("customer")
        line = digest_line(
            MARKERS.get(notice.event, "•"),
            ticket.number,
            sender if isinstance(sender, str) and sender else ticket.customer,
            message.text or "(no text)",
            files=len(message.attachments),
        )
        if ticket.unverified:  # the warning travels with every line of the ticket
            line = replace(line, lead=f"{line.lead.removesuffix(': ')} ⚠️ unverified sender: ")
        return line


def _files_row(item: OutboxItem) -> bool:
    return item.payload.get("event") == MAIL_FILES


def _shown_at_risk(notice: _Notice) -> bool:
    """Whether a restating notice puts the ticket's at-risk mark on its title and card."""
    return notice.event == AT_RISK or notice.item.payload.get("at_risk") is True


def _mentioned(notices: Sequence[_Notice]) -> list[list[object]]:
    """Everyone the notices mention, once each, so a digest still notifies them."""
    seen: dict[object, list[object]] = {}
    for notice in notices:
        for mention in notice.mentions:
            if mention:
                seen.setdefault(mention[0], mention)
    return list(seen.values())
