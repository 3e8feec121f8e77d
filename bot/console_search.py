"""`/history`, `/search` and `/merge` in the agents' group (issue 15, points 1 and 3), and the
[#N] buttons under a list of found tickets. `bot.console.AgentConsole` hands them over.
"""

from __future__ import annotations

import html
from datetime import timedelta

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MaybeInaccessibleMessage,
    Message,
)

from accounts.lookups import customers_paying
from bot.buttons import Action, ButtonSigner, Press
from bot.customers import ChatParts
from bot.format import MAX_TEXT
from bot.sending import answer_agent
from bot.store import Place, PlaceBook
from tickets.errors import SupportbotError
from tickets.model import MAX_ROW_ID
from tickets.rate_limits import RateRule
from tickets.search import FoundTicket, QueryKind, SearchQuery, parse_query

SEARCH_COMMANDS = {
    "history": "The customer's other tickets (in a ticket's topic, or /history N)",
    "search": "Find tickets: /search TEXT | EMAIL | TX | #N",
    "merge": "Move ticket N into this one: /merge N (in the surviving ticket's topic)",
}
SEARCH_USAGE = {
    "history": "/history (in a ticket's topic or as a reply to its card) · /history N",
    "search": "/search TEXT | EMAIL | TX | #N",
    "merge": "/merge N (in the surviving ticket's topic or as a reply to its card)",
}
# An [#N] button posts the ticket's line and link at most this often per ticket.
OPEN_POSTS = RateRule("open_posts", 1, timedelta(seconds=30))


class SearchUsage(SupportbotError):
    """A wrong argument: answered with the command's one-line usage."""

    def __init__(self, command: str) -> None:
        super().__init__(f"Usage: {SEARCH_USAGE[command]}")


def message_link(chat_id: int, place: Place) -> str | None:
    """A t.me/c/… link to a ticket's topic, else its card, in a supergroup."""
    internal = str(chat_id).removeprefix("-100") if str(chat_id).startswith("-100") else None
    if internal is None:
        internal = str(abs(chat_id))
    if place.thread_id is not None:
        return f"https://t.me/c/{internal}/{place.thread_id}"
    if place.card_id is not None:
        return f"https://t.me/c/{internal}/{place.card_id}"
    return None


class TicketFinder:
    """History, search and merge for one agents' group."""

    def __init__(self, parts: ChatParts, signer: ButtonSigner, places: PlaceBook) -> None:
        self._parts = parts
        self._bot = parts.bot
        self._desk = parts.desk
        self._limiter = parts.limiter
        self._signer = signer
        self._places = places

    async def command(
        self, message: Message, agent: int, ticket: int | None, name: str, args: str
    ) -> bool:
        """Handle `/history`, `/search` or `/merge`; False for any other command."""
        if name == "history":
            await self._history(message, agent, ticket, args)
        elif name == "search":
            await self._search(message, agent, ticket, args)
        elif name == "merge":
            await self._merge(message, agent, ticket, args)
        else:
            return False
        return True

    async def _history(self, message: Message, agent: int, ticket: int | None, args: str) -> None:
        words = args.split()
        if len(words) > 1 or (not words and ticket is None):
            raise SearchUsage("history")
        number = _number(words[0], "history") if words else ticket
        assert number is not None
        this, others = await self._desk.search.history(number, agent)
        who = html.escape(this.customer or "this customer")
        if not others:
            await self._answer(message, f"🗂 {who} has no other tickets than #{number}.")
            return
        lines = [f"🗂 <b>{who}'s other tickets</b> (newest first)"]
        lines += await self._lines(others)
        await self._answer(
            message, "\n".join(lines)[:MAX_TEXT], self._keyboard(others, message, ticket)
        )

    async def _search(self, message: Message, agent: int, ticket: int | None, args: str) -> None:
        query = parse_query(args)
        if query is None:
            raise SearchUsage("search")
        customers: list[int] = []
        if query.kind is QueryKind.TX:
            customers = await customers_paying(self._desk.sessions, query.value)
        found = await self._desk.search.search(query, agent, customers)
        shown = html.escape(args.strip()[:60])
        if not found:
            await self._answer(message, f"🔎 Nothing found for <i>{shown}</i>.")
            return
        lines = [f"🔎 <b>{len(found)} found</b> for <i>{shown}</i> (newest first)"]
        lines += await self._lines(found)
        await self._answer(
            message, "\n".join(lines)[:MAX_TEXT], self._keyboard(found, message, ticket)
        )

    async def _merge(self, message: Message, agent: int, ticket: int | None, args: str) -> None:
        words = args.split()
        if len(words) != 1 or ticket is None:
            raise SearchUsage("merge")
        number = _number(words[0], "merge")
        done = await self._desk.merger.merge(number, ticket, agent)
        said = f"🔗 #{done.merged} is merged into #{done.survivor}: {done.messages} message"
        said += "s moved" if done.messages != 1 else " moved"
        said += f"; #{done.merged} is closed and points here."
        if done.other_customer:
            said += (
                f" #{done.merged} was another customer record's (for example the same person "
                "by email and by Telegram): merged as asked."
            )
        if done.told:
            said += " The customer was told by " + html.escape(" and ".join(done.told)) + "."
        await self._answer(message, said)

    async def on_open(
        self, query: CallbackQuery, pressed: MaybeInaccessibleMessage, press: Press, agent: int
    ) -> None:
        """An [#N] button under a list: the ticket's line and link, posted under the list."""
        number = int(press.arg) if press.arg.isdigit() else None
        if number is None:
            await self._desk.refused(agent, press.action.value, "an open button of no ticket")
            await query.answer("This button is not valid.", show_alert=True)
            return
        if not (await self._desk.count_use(OPEN_POSTS, number)).allowed:
            await query.answer(f"#{number} was shown just above.", show_alert=True)
            return
        try:
            found = await self._desk.search.search(
                SearchQuery(QueryKind.NUMBER, str(number)), agent
            )
        except SupportbotError as error:
            await query.answer(str(error)[:200], show_alert=True)
            return
        if not found:
            await query.answer(f"#{number} is gone.", show_alert=True)
            return
        await query.answer()
        await self._answer(pressed, "\n".join(await self._lines(found)))

    async def _lines(self, found: list[FoundTicket]) -> list[str]:
        places = await self._places.tickets(t.number for t in found)
        lines = []
        for t in found:
            facts = places.get(t.number)
            link = message_link(self._places.chat_id, facts.place) if facts else None
            label = f'<a href="{link}">#{t.number}</a>' if link else f"#{t.number}"
            subject = f" · {html.escape(t.subject[:50])}" if t.subject else ""
            lines.append(
                f"{label} · {t.status} · {t.channel} · {t.opened_at:%Y-%m-%d} · "
                f"{html.escape(t.customer[:40])}{subject}"
            )
        return lines

    def _keyboard(
        self, found: list[FoundTicket], message: Message, ticket: int | None
    ) -> InlineKeyboardMarkup:
        """Buttons bound to where the list is: its ticket's topic, else no ticket (0)."""
        bound = ticket if message.is_topic_message else None
        buttons: list[InlineKeyboardButton] = [
            self._signer.button(f"#{t.number}", Action.OPEN, bound or 0, str(t.number))
            for t in found
        ]
        return InlineKeyboardMarkup([buttons[i : i + 5] for i in range(0, len(buttons), 5)])

    async def _answer(
        self,
        message: MaybeInaccessibleMessage,
        text: str,
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> None:
        await answer_agent(self._bot, self._limiter, message, text, keyboard)


def _number(word: str, command: str) -> int:
    digits = word.removeprefix("#")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10 or int(digits) > MAX_ROW_ID:
        raise SearchUsage(command)
    return int(digits)
