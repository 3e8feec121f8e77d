"""Agents in their supergroup: answers in a ticket's topic or to its card, commands, buttons."""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from telegram import CallbackQuery, MaybeInaccessibleMessage, Message
from telegram.error import TelegramError

from bot.buttons import Action, ButtonSigner, Press
from bot.console import CONSOLE_COMMANDS, DRAFT_ACTIONS, OPEN_COMMANDS, AgentConsole
from bot.convert import content_of
from bot.customers import ChatParts, split_command
from bot.refunds import BUTTON_ACTIONS, AgentRefunds
from bot.reports import send_report
from bot.satisfaction import on_score
from bot.sending import answer_agent
from bot.settings import ReplyMode
from bot.store import PlaceBook
from bot.transcripts import send_transcript
from tickets import queue
from tickets.errors import SupportbotError
from tickets.model import MAX_ROW_ID
from tickets.rate_limits import RateRule
from tickets.rendering import when

log = logging.getLogger(__name__)

# A button that posts into the group posts at most this often per ticket; the group's 20
# messages a minute are not spent on an agent's repeated presses.
BALANCE_POSTS = RateRule("balance_posts", 1, timedelta(minutes=1))

AGENT_COMMANDS = {
    "queue": "The top of the queue",
    "stats": "Open, waiting, at risk, breached, today's median",
    "report": "SLA report of a month (YYYY-MM)",
    "take": "Claim a ticket",
    "release": "Give a ticket back",
    "close": "Close a ticket",
    "reopen": "Reopen a ticket",
    "note": "Internal note",
    "reply": "Answer a ticket by number",
    "macro": "Send a canned answer",
    "balance": "Balance, plan, payments: /balance [N|EMAIL]",
    "account": "Tie a ticket to an account: /account N EMAIL, then /account N CODE",
    "transcript": "A ticket's every message in full, as a file",
    **CONSOLE_COMMANDS,
    "vouch": "Vouch for a ticket's unverified sender",
    "help": "Agent commands",
}


class AgentGroup:
    """Everything agents do in their group turns into a core operation, checked and audited."""

    def __init__(
        self,
        parts: ChatParts,
        signer: ButtonSigner,
        chat_id: int,
        refunds: AgentRefunds | None = None,
        places: PlaceBook | None = None,
        console: AgentConsole | None = None,
    ) -> None:
        self._bot = parts.bot
        self._desk = parts.desk
        self._policy = parts.policy
        self._templates = parts.templates
        self._limiter = parts.limiter
        self._clock = parts.clock
        self._parts = parts
        self._signer = signer
        self.chat_id = chat_id
        self._refunds = refunds
        self._accounts = parts.accounts
        self._places = places or PlaceBook(parts.desk.sessions, chat_id, parts.clock)
        self._console = console or AgentConsole(parts, signer, self._places)

    # -- messages ---------------------------------------------------------------------------

    async def on_message(self, message: Message) -> None:
        """Handle a message in the agents' group; people who are not agents are ignored."""
        user = message.from_user
        if user is None or user.is_bot:
            return
        await self._console.saw(user)
        role = await self._desk.agent_role(user.id)
        command = split_command(message.text or "", self._bot.username)
        if command is not None and command[0] in OPEN_COMMANDS:
            await self._console.open_command(message, user, command[0], role)
            return
        if role is None:
            return  # not an agent: ignored; what each agent may do is checked by the core
        ticket = await self._ticket_of(message)
        try:
            if command is not None:
                await self._command(message, user.id, ticket, *command)
            elif ticket is not None:
                if self._console.reply_mode is ReplyMode.CONFIRM:
                    await self._console.draft(message, user.id, ticket)
                else:
                    await self._reply(message, user.id, ticket)
        except SupportbotError as error:
            await self._answer(message, f"⚠️ {html.escape(str(error), quote=False)}")

    async def on_edit(self, message: Message) -> None:
        """An agent edited a message in the group: an edited reply is passed on (or not, said)."""
        user = message.from_user
        if user is None or user.is_bot or await self._desk.agent_role(user.id) is None:
            return
        try:
            await self._console.on_edit(message, user.id)
        except SupportbotError as error:
            await self._answer(message, f"⚠️ {html.escape(str(error), quote=False)}")

    async def _reply(self, message: Message, agent: int, ticket: int) -> None:
        content = content_of(message)
        if content is None:
            await self._answer(message, "⚠️ This kind of message cannot be sent to a customer.")
            return
        await self._desk.reply(
            ticket, agent, content.text, content.attachments, key=_key_of(message)
        )

    async def _ticket_of(self, message: Message) -> int | None:
        """The ticket a message is about: its forum topic, or the ticket post it replies to."""
        if message.is_topic_message and message.message_thread_id is not None:
            found = await self._places.ticket_of_topic(message.message_thread_id)
            if found is not None:
                return found
        replied = message.reply_to_message
        if replied is not None and replied.forum_topic_created is None:
            return await self._places.ticket_of_post(replied.message_id)
        return None

    async def _ticket_of_buttons(self, message: MaybeInaccessibleMessage) -> int | None:
        """The ticket a message with buttons belongs to: its record, else its forum topic."""
        found = await self._places.ticket_of_post(message.message_id)
        if found is None and isinstance(message, Message) and message.is_topic_message:
            thread = message.message_thread_id
            found = await self._places.ticket_of_topic(thread) if thread is not None else None
        return found

    async def _command(
        self, message: Message, agent: int, ticket: int | None, name: str, args: str
    ) -> None:
        if await self._console.command(message, agent, ticket, name, args):
            return
        if name in ("refund", "approve", "paid") and self._refunds is not None:
            await self._refunds.command(message, agent, ticket, name, args)
            return
        if name in _DONE or name in ("ban", "unban", "note", "reply", "macro", "vouch"):
            await self._on_ticket(message, agent, ticket, name, args)
        elif name == "balance" and self._accounts is not None:
            text = await self._accounts.agent_balance(agent, args, ticket)
            await self._answer(message, html.escape(text, quote=False))
        elif name == "account" and self._accounts is not None:
            text = await self._accounts.agent_account(agent, args, ticket)
            await self._answer(message, html.escape(text, quote=False))
        elif name == "queue":
            await self._queue(message)
        elif name == "stats":
            await self._stats(message)
        elif name == "report":
            await send_report(self._parts, message, agent, args)
        elif name == "transcript":
            number, _ = _number_and_rest(args, ticket)
            await send_transcript(self._parts, message, _need(number, name))
        elif name in ("help", "start"):
            await self._answer(
                message,
                html.escape(
                    self._templates.render("agents/help", macros=self._macros()), quote=False
                ),
            )
        else:
            await self._answer(
                message, f"⚠️ Unknown command /{html.escape(name)}. /help lists them."
            )

    async def _on_ticket(
        self, message: Message, agent: int, ticket: int | None, name: str, args: str
    ) -> None:
        """Commands about one ticket: the number given, or the topic or card written in."""
        number, rest = _number_and_rest(args, ticket)
        simple: dict[str, Callable[[int, int], Awaitable[None]]] = {
            "take": self._desk.claim,
            "claim": self._desk.claim,
            "release": self._desk.release,
            "close": self._desk.close,
            "reopen": self._desk.reopen,
        }
        if name in simple:
            target = _need(number, name)
            await simple[name](target, agent)
            await self._answer(message, f"#{target} {_DONE[name]}.")
        elif name == "vouch":
            target = _need(number, name)
            covered = await self._desk.vouch(target, agent)
            plural = "s" if covered != 1 else ""
            await self._answer(
                message,
                f"✅ #{target}: you vouched for the sender of {covered} unverified "
                f"message{plural}; the warning is lifted.",
            )
        elif name in ("ban", "unban"):
            target = _need(number, name)
            await self._desk.ban(target, agent, banned=name == "ban")
            await self._answer(message, f"The customer of #{target} is {name}ned.")
        elif name == "note":
            target = _need(number, name)
            if not rest:
                await self._answer(message, "⚠️ /note needs the text of the note.")
                return
            await self._desk.note(target, agent, rest)
            await self._answer(message, f"📝 Note added to #{target} (not sent to the customer).")
        elif name == "reply":
            # For a ticket that has no topic or card yet (seen only in a digest under load).
            target = _need(number, name)
            if not rest:
                await self._answer(message, "⚠️ /reply needs the text of the answer.")
                return
            await self._desk.reply(target, agent, rest, key=_key_of(message))
        else:
            await self._macro(message, agent, number, rest)

    async def _macro(self, message: Message, agent: int, number: int | None, name: str) -> None:
        target = _need(number, "macro")
        available = self._macros()
        if name not in available:
            listed = ", ".join(available) or "none yet"
            await self._answer(message, f"⚠️ No macro {html.escape(name)!r}. Available: {listed}.")
            return
        reply = self._templates.render(f"macros/{name}")
        await self._desk.reply(target, agent, reply, key=_key_of(message))

    def _macros(self) -> list[str]:
        folder = Path(self._templates.directory) / "macros"
        return sorted(p.stem for p in folder.glob("*.txt"))

    async def _queue(self, message: Message) -> None:
        now = self._clock()
        entries = await queue.QueueViews(self._desk.sessions, self._policy).top(now, 20)
        if not entries:
            await self._answer(message, "The queue is empty: nobody is waiting for an answer.")
            return
        badge = {"breached": "🔴", "at_risk": "🟠", "on_track": "🟢", "not_waiting": "⚪"}
        lines = ["<b>Queue</b> (most urgent first)"]
        for e in entries:
            pro = " <b>PRO</b>" if e.plan.value == "pro" else ""
            who = f" · {html.escape(e.assignee)}" if e.assignee else ""
            lines.append(
                f"{badge[e.urgency.value]} #{e.ticket}{pro} · {html.escape(e.customer)} · "
                f"due {html.escape(when(e.due_at))}{who}"
            )
        await self._answer(message, "\n".join(lines))

    async def _stats(self, message: Message) -> None:
        now = self._clock()
        s = await queue.QueueViews(self._desk.sessions, self._policy).stats(now)
        await self._answer(
            message, html.escape(self._templates.render("agents/stats", stats=s), quote=False)
        )

    async def _answer(self, message: MaybeInaccessibleMessage, text: str) -> None:
        await answer_agent(self._bot, self._limiter, message, text)

    # -- buttons ----------------------------------------------------------------------------

    async def on_button(self, query: CallbackQuery) -> None:
        """Check a press from scratch — signature, group, the message it is on, presser,
        ticket state — before acting; a press is answered on the button, never in the group."""
        user = query.from_user
        press = self._signer.check(query.data)
        pressed = query.message  # possibly "inaccessible" (too old to show): id and chat only
        mine = pressed is not None and pressed.chat.id == user.id  # a customer's private chat
        if press is not None and press.action is Action.CSAT and mine:
            await on_score(query, press, self._desk, user.id)
            return
        if press is None or pressed is None or pressed.chat.id != self.chat_id:
            await self._desk.refused(user.id, "button", f"invalid button data {query.data!r}")
            await query.answer("This button is not valid.", show_alert=True)
            return
        on = await self._ticket_of_buttons(pressed)
        if press.action is Action.OPEN and on is None:
            on = 0  # a list of found tickets outside any ticket's topic
        if on != press.ticket:
            where = f"a message of #{on}" if on is not None else "a message of no ticket"
            reason = f"a button of #{press.ticket} pressed on {where}"
            await self._desk.refused(user.id, press.action.value, reason, on)
            await query.answer("This button does not belong to this message.", show_alert=True)
            return
        role = await self._desk.agent_role(user.id)
        if role is None:
            await self._desk.refused(user.id, press.action.value, "not an agent", press.ticket)
            await query.answer("Only agents can use these buttons.", show_alert=True)
            return
        if await self._other_button(query, pressed, press, user.id):
            return
        actions = {
            Action.CLAIM: self._desk.claim,
            Action.RELEASE: self._desk.release,
            Action.CLOSE: self._desk.close,
            Action.REOPEN: self._desk.reopen,
        }
        try:
            await actions[press.action](press.ticket, user.id)
        except SupportbotError as error:
            await self._desk.refused(user.id, press.action.value, str(error), press.ticket)
            await query.answer(str(error), show_alert=True)
            return
        await query.answer(f"#{press.ticket}: {press.action.value} done.")
        claimed = press.action is Action.CLAIM
        closed = press.action is Action.CLOSE
        try:
            await query.edit_message_reply_markup(
                self._signer.card_keyboard(press.ticket, claimed=claimed, closed=closed)
            )
        except TelegramError as error:  # the action is done; a stale keyboard is only cosmetic
            log.warning("could not update the buttons of #%s: %s", press.ticket, error)

    async def _other_button(
        self, query: CallbackQuery, pressed: MaybeInaccessibleMessage, press: Press, agent: int
    ) -> bool:
        """Balance, draft and refund buttons, each handled by its own part; False for others."""
        if press.action is Action.BALANCE:
            await self._balance_button(query, pressed, agent, press.ticket)
        elif press.action is Action.OPEN:
            await self._console.finder.on_open(query, pressed, press, agent)
        elif press.action in DRAFT_ACTIONS:
            await self._console.on_draft_button(query, pressed, press, agent)
        elif press.action in BUTTON_ACTIONS:
            if self._refunds is not None:
                await self._refunds.on_button(query, pressed, press, agent)
        else:
            return False
        return True

    async def _balance_button(
        self, query: CallbackQuery, card: MaybeInaccessibleMessage, agent: int, ticket: int
    ) -> None:
        """The card's Balance button: the lookup is posted under the card (audited there), at
        most once a minute per ticket; presses in between are answered on the button."""
        if self._accounts is None:
            await query.answer("Balance lookups are not switched on.", show_alert=True)
            return
        if not (await self._desk.count_use(BALANCE_POSTS, ticket)).allowed:
            await query.answer(
                f"The balance of #{ticket} was posted less than a minute ago, just above; "
                f"/balance {ticket} shows it again.",
                show_alert=True,
            )
            return
        try:
            text = await self._accounts.agent_balance(agent, str(ticket), None)
        except SupportbotError as error:
            await query.answer(str(error)[:200], show_alert=True)
            return
        await query.answer()
        await self._answer(card, html.escape(text, quote=False))


_DONE = {
    "take": "claimed",
    "claim": "claimed",
    "release": "released",
    "close": "closed",
    "reopen": "reopened",
}


def _number_and_rest(args: str, context: int | None) -> tuple[int | None, str]:
    head, _, tail = args.partition(" ")
    candidate = head.removeprefix("#")
    if candidate.isascii() and candidate.isdigit():
        if len(candidate) > len(str(MAX_ROW_ID)) or int(candidate) > MAX_ROW_ID:
            raise SupportbotError(f"there is no ticket #{candidate[:20]}")
        return int(candidate), tail.strip()
    return context, args.strip()


def _key_of(message: Message) -> str:
    """The agent's message as the desk knows it: a reply it asks for is queued once."""
    return f"{message.chat_id}:{message.message_id}"


def _need(number: int | None, command: str) -> int:
    if number is None:
        raise SupportbotError(f"/{command} needs a ticket number here, e.g. /{command} 42")
    return number
