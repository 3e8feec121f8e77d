"""The agents' console in the group: set-up (`/whoami`, `/chatid`, `/agent`, `/audit`), handing
tickets over (`/assign`, `/mine`), tags (`/tag`), reply drafts of `REPLY_MODE=confirm` and edits
of sent replies. `bot.agents.AgentGroup` hands these commands, presses and edits over.
"""

from __future__ import annotations

import html
import logging
from datetime import timedelta

from telegram import CallbackQuery, InlineKeyboardMarkup, MaybeInaccessibleMessage, Message, User
from telegram.constants import MessageEntityType
from telegram.error import Forbidden, TelegramError

from bot.buttons import Action, ButtonSigner, Press
from bot.console_search import SEARCH_COMMANDS, TicketFinder
from bot.console_store import PENDING, ConsoleBook, Draft
from bot.convert import content_of
from bot.customers import ChatParts
from bot.format import MAX_TEXT
from bot.sending import answer_agent
from bot.settings import ReplyMode
from bot.store import POST, PlaceBook
from tickets.console import TrailEntry, edit_in_window
from tickets.errors import SupportbotError
from tickets.model import MAX_ROW_ID, Attachment, Channel, Role
from tickets.pending import DEFAULT_PENDING_DAYS, MAX_PENDING_DAYS
from tickets.rate_limits import RateRule
from tickets.rendering import when

log = logging.getLogger(__name__)

MAX_TELEGRAM_ID = 2**63 - 1
# `/whoami` and `/chatid` answer anyone in the group: a stranger spends the group's budget at
# most this often.
OPEN_ANSWERS = RateRule("whoami", 3, timedelta(minutes=10))
OPEN_COMMANDS = frozenset({"whoami", "chatid"})

CONSOLE_COMMANDS = {
    "whoami": "Your Telegram id and role (anyone)",
    "chatid": "This group's id (anyone)",
    "assign": "Hand a ticket to an agent: /assign N @agent|ID",
    "mine": "Your own open tickets",
    "tag": "Tag a ticket: /tag N word…",
    "audit": "A ticket's audit trail: /audit N",
    "agent": "Admins: /agent add|remove @user|ID [agent|admin]",
    **SEARCH_COMMANDS,
    "pending": "Wait on the customer: /pending N [days]",
}
USAGE = {
    "assign": "/assign N @agent|ID (in a ticket's topic: /assign @agent|ID)",
    "tag": "/tag N word… (in a ticket's topic: /tag word…)",
    "audit": "/audit N",
    "mine": "/mine",
    "agent": "/agent add @user|ID [agent|admin] · /agent remove @user|ID",
    "pending": f"/pending N [days] (days 1–{MAX_PENDING_DAYS}, default {DEFAULT_PENDING_DAYS}; "
    "in a ticket's topic: /pending [days])",
}
DRAFT_ACTIONS = {
    Action.DRAFT_SEND: "sent",
    Action.DRAFT_NOTE: "noted",
    Action.DRAFT_DISCARD: "discarded",
}
_DRAFT_LABELS = {
    Action.DRAFT_SEND: "✉️ Send",
    Action.DRAFT_NOTE: "📝 Note",
    Action.DRAFT_DISCARD: "🗑 Discard",
}


class Usage(SupportbotError):
    """A console command with a wrong argument: answered with its one-line usage."""

    def __init__(self, command: str) -> None:
        super().__init__(f"Usage: {USAGE[command]}")


class AgentConsole:
    """Console commands, drafts and reply edits for one agents' group."""

    def __init__(
        self,
        parts: ChatParts,
        signer: ButtonSigner,
        places: PlaceBook,
        *,
        reply_mode: ReplyMode = ReplyMode.DIRECT,
        edit_window: timedelta = timedelta(minutes=10),
    ) -> None:
        self._parts = parts
        self._bot = parts.bot
        self._desk = parts.desk
        self._console = parts.desk.console
        self._limiter = parts.limiter
        self._clock = parts.clock
        self._templates = parts.templates
        self._signer = signer
        self._places = places
        self._book = ConsoleBook(parts.desk.sessions, parts.clock)
        self.finder = TicketFinder(parts, signer, places)
        self.reply_mode = reply_mode
        self.edit_window = edit_window

    # -- anyone ---------------------------------------------------------------------------

    async def saw(self, user: User) -> None:
        """Remember who writes in the group, so `@name` finds their id later."""
        await self._book.saw(user.id, user.username, user.full_name)

    async def open_command(
        self, message: Message, user: User, name: str, role: Role | None
    ) -> None:
        """`/whoami` and `/chatid`: anyone's own id and the group's, nothing more."""
        if role is None and not (await self._desk.count_use(OPEN_ANSWERS, user.id)).allowed:
            return
        group = f"This group's id: <code>{message.chat.id}</code>"
        if name == "chatid":
            await self._answer(message, group)
            return
        if role is None:
            standing = (
                "You are not an agent. An admin can add you here with "
                f"<code>/agent add {user.id}</code>."
            )
        else:
            standing = f"You are an agent, role <b>{role.value}</b>."
        await self._answer(
            message, f"Your Telegram id: <code>{user.id}</code>\n{standing}\n{group}"
        )

    # -- agents ---------------------------------------------------------------------------

    async def command(
        self, message: Message, agent: int, ticket: int | None, name: str, args: str
    ) -> bool:
        """Handle a console command; False when `name` is not one."""
        handlers = {
            "assign": self._assign,
            "mine": self._mine,
            "tag": self._tag,
            "audit": self._audit,
            "agent": self._agent,
            "pending": self._pending,
        }
        handler = handlers.get(name)
        if handler is None:
            return await self.finder.command(message, agent, ticket, name, args)
        await handler(message, agent, ticket, args)
        return True

    async def _assign(self, message: Message, agent: int, ticket: int | None, args: str) -> None:
        words = args.split()
        if len(words) == 2:
            number, target = _ticket_number(words[0], "assign"), words[1]
        elif len(words) == 1 and ticket is not None:
            number, target = ticket, words[0]
        else:
            raise Usage("assign")
        assignee_id, _name = await self._person(message, target, "assign")
        done = await self._console.assign(number, agent, assignee_id)
        before = f" (was {html.escape(done.previous)})" if done.previous else ""
        said = f"👤 #{number} is now {html.escape(done.assignee)}'s{before}."
        if assignee_id != agent:
            said += " " + await self._tell_assignee(done.assignee_id, number, message)
        await self._answer(message, said)

    async def _tell_assignee(self, assignee: int, number: int, message: Message) -> str:
        """A private message to the assignee; they may never have started the bot (403)."""
        by = message.from_user.full_name if message.from_user else "an agent"
        text = f"👤 {by} gave you ticket #{number}. /mine lists your tickets."
        try:
            async with self._limiter.sending(assignee):
                await self._bot.send_message(assignee, text, parse_mode=None)
        except Forbidden:
            return "They have not started a chat with the bot, so they were not told privately."
        except TelegramError as error:
            return f"Telling them privately failed: {html.escape(error.message)}."
        return "They were told in a private message."

    async def _mine(self, message: Message, agent: int, _ticket: int | None, args: str) -> None:
        if args:
            raise Usage("mine")
        mine = await self._console.mine(agent)
        if not mine:
            await self._answer(message, "You hold no open tickets.")
            return
        lines = ["<b>Your tickets</b> (most urgent first)"]
        for t in mine:
            state = f"due {html.escape(when(t.due_at))}" if t.due_at else "not waiting"
            subject = f" · {html.escape(t.subject[:60])}" if t.subject else ""
            lines.append(f"#{t.number} · {state}{subject}")
        await self._answer(message, "\n".join(lines))

    async def _tag(self, message: Message, agent: int, ticket: int | None, args: str) -> None:
        words = args.split()
        if words and words[0].removeprefix("#").isdigit():
            number: int | None = _ticket_number(words[0], "tag")
            words = words[1:]
        else:
            number = ticket
        if number is None or not words:
            raise Usage("tag")
        tags = await self._console.tag(number, agent, words)
        await self._answer(message, f"🏷 #{number}: {html.escape(', '.join(tags))}")

    async def _pending(self, message: Message, agent: int, ticket: int | None, args: str) -> None:
        words = args.split()
        # In a topic one bare number is the days; "#N", or two words, name the ticket first.
        names_ticket = len(words) == 2 or (len(words) == 1 and ticket is None)
        if words and (words[0].startswith("#") or names_ticket):
            number: int | None = _ticket_number(words[0], "pending")
            words = words[1:]
        else:
            number = ticket
        if number is None or len(words) > 1:
            raise Usage("pending")
        days = DEFAULT_PENDING_DAYS
        if words:
            word = words[0]
            if not (word.isascii() and word.isdigit()) or not 1 <= int(word) <= MAX_PENDING_DAYS:
                raise Usage("pending")
            days = int(word)
        parked = await self._desk.pending.park(number, agent, days)
        left = " It left the SLA queue." if parked.was_waiting else ""
        remind, close = html.escape(when(parked.remind_at)), html.escape(when(parked.close_at))
        await self._answer(
            message,
            f"⏸ #{number} waits on the customer.{left} Reminder {remind}, closes {close} unless "
            "they write; a message from them ends the wait.",
        )

    async def _audit(self, message: Message, agent: int, ticket: int | None, args: str) -> None:
        words = args.split()
        if len(words) > 1 or (not words and ticket is None):
            raise Usage("audit")
        number = _ticket_number(words[0], "audit") if words else ticket
        assert number is not None
        trail = await self._console.trail(number, agent)
        lines = [f"<b>Audit trail of #{number}</b>"] + [_trail_line(e) for e in trail]
        if not trail:
            lines.append("(nothing recorded yet)")
        await self._answer(message, "\n".join(lines)[:MAX_TEXT])

    async def _agent(self, message: Message, agent: int, _ticket: int | None, args: str) -> None:
        words = args.split()
        if len(words) < 2 or words[0].lower() not in ("add", "remove"):
            raise Usage("agent")
        verb, target, rest = words[0].lower(), words[1], words[2:]
        if verb == "remove" and rest:
            raise Usage("agent")
        if len(rest) > 1 or (rest and rest[0].lower() not in ("agent", "admin")):
            raise Usage("agent")
        who, name = await self._person(message, target, "agent")
        label = html.escape(name or str(who))
        if verb == "remove":
            await self._console.drop_agent(agent, who)
            await self._answer(message, f"{label} ({who}) is no longer an agent.")
            return
        role = Role(rest[0].lower()) if rest else Role.AGENT
        added = await self._console.set_agent(agent, who, role, name)
        what = "is now an agent" if added else "now has the role"
        await self._answer(message, f"{label} ({who}) {what}: <b>{role.value}</b>.")

    async def _person(self, message: Message, target: str, command: str) -> tuple[int, str]:
        """`@username`, a numeric id, or a mention of someone without a username."""
        for entity in message.entities or ():
            if entity.type == MessageEntityType.TEXT_MENTION and entity.user is not None:
                return entity.user.id, entity.user.full_name
        if target.isascii() and target.isdigit():
            if len(target) > 19 or int(target) > MAX_TELEGRAM_ID or int(target) == 0:
                raise Usage(command)
            return int(target), ""
        handle = target.removeprefix("@")
        if not target.startswith("@") or not handle.replace("_", "").isalnum() or len(handle) > 64:
            raise Usage(command)
        found = await self._book.person_named(handle)
        if found is None:
            raise SupportbotError(
                f"I have not seen @{handle} in this group yet: ask them to send /whoami here, "
                "or give their numeric id"
            )
        return found

    # -- drafts (REPLY_MODE=confirm) ----------------------------------------------------------

    async def draft(self, message: Message, agent: int, ticket: int) -> None:
        """Keep an agent's message as a draft under [Send] [Note] [Discard]."""
        content = content_of(message)
        if content is None:
            await self._answer(message, "⚠️ This kind of message cannot be sent to a customer.")
            return
        draft = await self._book.add_draft(
            ticket,
            agent,
            message.chat.id,
            message.message_id,
            content.text,
            [a.to_json() for a in content.attachments],
        )
        if draft.state != PENDING:
            return  # taken in again after a crash: already decided
        keyboard = InlineKeyboardMarkup(
            [
                [
                    self._signer.button(label, action, ticket, str(draft.id))
                    for action, label in _DRAFT_LABELS.items()
                ]
            ]
        )
        files = len(draft.attachments)
        extra = f" and {files} file{'s' if files != 1 else ''}" if files else ""
        panel = await answer_agent(
            self._bot,
            self._limiter,
            message,
            f"📝 Draft for #{ticket}{extra}: not sent yet. Send it to the customer, keep it as "
            "an internal note, or discard it.",
            keyboard,
        )
        thread = message.message_thread_id if message.is_topic_message else None
        await self._places.record(ticket, POST, panel.message_id, thread)

    async def on_draft_button(
        self, query: CallbackQuery, pressed: MaybeInaccessibleMessage, press: Press, user: int
    ) -> None:
        """A press on a draft's panel: bound to that draft, by its author, acted on once."""
        draft = await self._book.draft(int(press.arg)) if press.arg.isdigit() else None
        if draft is None or draft.ticket != press.ticket:
            await self._desk.refused(user, press.action.value, "a draft button of no such draft")
            await query.answer("This button is not valid.", show_alert=True)
            return
        if draft.agent != user:
            await self._desk.refused(
                user, press.action.value, f"draft {draft.id} is not theirs", draft.ticket
            )
            await query.answer("Only the agent who wrote this draft can use it.", show_alert=True)
            return
        state = DRAFT_ACTIONS[press.action]
        if not await self._book.decide(draft.id, state):
            current = await self._book.draft(draft.id)
            shown = current.state if current else "gone"
            await query.answer(f"This draft was already {shown}.", show_alert=True)
            return
        try:
            said = await self._act_on(draft, press.action, user)
        except SupportbotError as error:
            await self._book.undecide(draft.id)
            await query.answer(str(error)[:200], show_alert=True)
            return
        await query.answer(said)
        try:
            await self._bot.edit_message_text(
                f"📝 Draft for #{draft.ticket}: {said}", pressed.chat.id, pressed.message_id
            )
        except TelegramError as error:  # done either way; the panel is only a view
            log.warning("could not update the draft panel of #%s: %s", draft.ticket, error)

    async def _act_on(self, draft: Draft, action: Action, agent: int) -> str:
        if action is Action.DRAFT_SEND:
            attachments = [Attachment.from_json(a) for a in draft.attachments]
            await self._desk.reply(draft.ticket, agent, draft.text, attachments, key=draft.key)
            return "sent to the customer."
        if action is Action.DRAFT_NOTE:
            if not draft.text.strip():
                raise SupportbotError("a draft without text cannot become a note")
            await self._desk.note(draft.ticket, agent, draft.text)
            dropped = " (its files are not kept in notes)" if draft.attachments else ""
            return f"kept as an internal note{dropped}."
        return "discarded; nothing was sent."

    # -- edits of sent replies ----------------------------------------------------------------

    async def on_edit(self, message: Message, agent: int) -> None:
        """An agent edited a message: pass the edit of a reply on, or say plainly it was not."""
        key = f"{message.chat.id}:{message.message_id}"
        sent = await self._console.sent_reply(key)
        if sent is None:
            if await self._book.draft_of(message.chat.id, message.message_id) is not None:
                await self._answer(
                    message,
                    "✏️ A draft keeps the text it had when you wrote it: Discard it and "
                    "write again.",
                )
            return
        content = content_of(message)
        text = content.text if content is not None else ""
        if text.strip() == sent.text.strip():
            return  # only files or formatting touched: nothing the customer would read changed
        minutes = int(self.edit_window.total_seconds() // 60)
        not_passed = f"✏️ Your edit was <b>not</b> passed on to the customer of #{sent.ticket}: "
        if not edit_in_window(sent.created_at, self._clock(), self.edit_window):
            await self._answer(
                message,
                not_passed + f"the reply went out more than {minutes} minutes ago. "
                "They see the first text; send a new message to correct it.",
            )
            return
        if sent.channel == Channel.EMAIL.value:
            await self._desk.reply(
                sent.ticket,
                agent,
                self._templates.render("mail/correction", text=text),
                key=f"{key}:edit:{int(message.edit_date.timestamp()) if message.edit_date else 0}",
            )
            await self._console.record_edit(sent.message_id, agent, text, passed_on="mail")
            await self._answer(
                message,
                f"✏️ Your edit of the reply on #{sent.ticket} goes to the customer as a short "
                "correction mail.",
            )
            return
        why = await self._telegram_edit(sent.external_id, sent.delivered, sent.attachments, text)
        if why is not None:
            await self._answer(message, not_passed + why)
            return
        await self._console.record_edit(sent.message_id, agent, text, passed_on="telegram")
        await self._answer(
            message,
            f"✏️ Your edit was passed on: the customer's copy of the reply on #{sent.ticket} "
            "now reads the new text.",
        )

    async def _telegram_edit(
        self, external_id: str | None, delivered: bool, attachments: int, text: str
    ) -> str | None:
        """Edit the customer's copy; the reason it could not be, or None when it was."""
        if not delivered or not external_id:
            return "the reply is still on its way. Send a new message to correct it."
        if attachments or not text.strip() or len(text) > MAX_TEXT:
            return "only a reply of text in one message can be edited. Send a new message."
        chat, _, sent_id = external_id.partition(":")
        try:
            async with self._limiter.sending(int(chat)):
                await self._bot.edit_message_text(text, int(chat), int(sent_id), parse_mode=None)
        except TelegramError as error:
            return f"Telegram refused the edit ({html.escape(error.message)})."
        return None

    async def _answer(self, message: MaybeInaccessibleMessage, text: str) -> None:
        await answer_agent(self._bot, self._limiter, message, text)


def _ticket_number(word: str, command: str) -> int:
    digits = word.removeprefix("#")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10 or int(digits) > MAX_ROW_ID:
        raise Usage(command)
    return int(digits)


def _trail_line(entry: TrailEntry) -> str:
    skip = {"telegram_id", "message_id"}
    details = ", ".join(
        f"{k}={v}" for k, v in entry.details.items() if k not in skip and v not in (None, "")
    )
    tail = f" · {html.escape(details[:120])}" if details else ""
    return (
        f"{entry.at:%Y-%m-%d %H:%M} · {html.escape(entry.actor)} · "
        f"<b>{html.escape(entry.action)}</b>{tail}"
    )
