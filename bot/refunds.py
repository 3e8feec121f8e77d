"""Refunds in Telegram: the panel and its buttons for agents, `/approve`, `/paid`, and a customer's
`/refund` request. The checks and the money live in `accounts/`; this only talks.
"""

from __future__ import annotations

import html
import logging
from datetime import timedelta

from telegram import Bot, CallbackQuery, InlineKeyboardMarkup, MaybeInaccessibleMessage, Message

from accounts.ledger import Identity, owner_of_telegram_user
from accounts.money import cents
from accounts.payouts import PayoutDesk
from accounts.refund_desk import Panel, PlanChanged, RefundDesk, RefundResult, RefundStatus
from accounts.refund_rules import RefundScope
from bot.buttons import Action, ButtonSigner, Press
from bot.limits import TelegramLimiter
from bot.sending import answer_agent
from bot.store import POST, PlaceBook
from tickets import queue
from tickets.desk import Desk
from tickets.errors import SupportbotError
from tickets.model import Channel, CustomerRef, IncomingMessage
from tickets.policy import SlaPolicy
from tickets.ports import Clock
from tickets.rate_limits import RateRule
from tickets.rendering import Templates

log = logging.getLogger(__name__)

AGENT_REFUND_COMMANDS = {
    "refund": "Refund panel of a ticket's account; admins: /refund N full REASON",
    "approve": "Approve a held refund (admins)",
    "paid": "Mark a payout sent: /paid ID TXHASH (admins)",
}
BUTTON_ACTIONS = frozenset({Action.REFUND, Action.CONFIRM_REFUND, Action.APPROVE_REFUND})
CHOICE_LABELS = {
    RefundScope.ALL: "Refund everything",
    RefundScope.UPGRADE: "Only the Pro upgrade",
    RefundScope.BALANCE: "Only the balance",
}
# A refund panel is posted by its button at most this often per ticket (`/refund N` always).
PANEL_POSTS = RateRule("refund_panel_posts", 1, timedelta(minutes=1))
# The subject of a customer's refund request: its card shows it, and a second /refund finds it.
REFUND_SUBJECT = "Refund request"


class AgentRefunds:
    """`/refund [N] [verified]`, `/approve ID`, `/paid ID TXHASH` and the refund buttons."""

    def __init__(
        self,
        bot: Bot,
        limiter: TelegramLimiter,
        signer: ButtonSigner,
        refunds: RefundDesk,
        payouts: PayoutDesk,
        desk: Desk,
        places: PlaceBook,
    ) -> None:
        self._bot = bot
        self._limiter = limiter
        self._signer = signer
        self._refunds = refunds
        self._payouts = payouts
        self._desk = desk
        self._places = places

    async def command(
        self, message: Message, agent: int, ticket: int | None, name: str, args: str
    ) -> None:
        """Handle one refund command; a SupportbotError is shown to the agent by the caller."""
        words = args.split()
        if name == "refund":
            number = ticket
            if words and words[0].removeprefix("#").isdigit():
                number = int(words.pop(0).removeprefix("#"))
            if number is None:
                raise SupportbotError("/refund needs a ticket number here, e.g. /refund 42")
            if words and words[0] == "full":
                verified = len(words) > 1 and words[1] == "verified"
                reason = " ".join(words[2:] if verified else words[1:])
                result = await self._refunds.full(number, agent, reason, verified=verified)
                text = html.escape(result.text, quote=False)
                await self._say(message, text, result.ticket, self._approve_keyboard(result))
                return
            if words not in ([], ["verified"]):
                raise SupportbotError(
                    "use /refund N, /refund N verified, or (admins) /refund N full REASON"
                )
            panel = await self._refunds.panel(number, agent, verified=words == ["verified"])
            await self._say(message, _html(panel.text), panel.ticket, self._keyboard(panel))
        elif name == "approve":
            if len(words) != 1 or not words[0].isdigit():
                raise SupportbotError("use /approve REFUND_ID, e.g. /approve 7")
            result = await self._refunds.approve(int(words[0]), agent)
            await self._say(message, html.escape(result.text, quote=False), result.ticket)
        elif name == "paid":
            if len(words) != 2 or not words[0].isdigit():
                raise SupportbotError("use /paid PAYOUT_ID TXHASH, e.g. /paid 3 0xabc…")
            text = await self._payouts.mark_sent(int(words[0]), words[1], telegram_id=agent)
            await self._say(message, html.escape(text, quote=False), None)

    def _keyboard(self, panel: Panel) -> InlineKeyboardMarkup | None:
        """A Confirm button per choice: everything, only the upgrade, only the balance."""
        if not panel.can_confirm or not panel.options:
            return None
        rows = []
        for plan in panel.options:
            arg = plan.fingerprint + plan.scope.letter + ("v" if panel.verified else "")
            label = f"✅ {CHOICE_LABELS[plan.scope]}: {cents(plan.total)}"
            if len(panel.options) == 1:
                label = f"✅ Confirm refund of {cents(plan.total)}"
            rows.append([self._signer.button(label, Action.CONFIRM_REFUND, panel.ticket, arg)])
        return InlineKeyboardMarkup(rows)

    def _approve_keyboard(self, result: RefundResult) -> InlineKeyboardMarkup | None:
        if result.status is not RefundStatus.AWAITING_APPROVAL or result.ticket is None:
            return None
        label = f"👮 Approve refund {result.refund_id} (admins)"
        button = self._signer.button(
            label, Action.APPROVE_REFUND, result.ticket, str(result.refund_id)
        )
        return InlineKeyboardMarkup([[button]])

    async def on_button(
        self, query: CallbackQuery, pressed: MaybeInaccessibleMessage, press: Press, agent: int
    ) -> None:
        """A refund button, already checked for signature, group, message and agent.

        Only a press that changes something posts into the group; a repeated one (the refund
        is done already, the panel was just shown) is answered on the button.
        """
        try:
            if press.action is Action.REFUND:
                await self._panel_button(query, pressed, press.ticket, agent)
                return
            if press.action is Action.CONFIRM_REFUND:
                fingerprint, scope, verified = confirm_arg(press.arg)
                result = await self._refunds.confirm(
                    press.ticket, agent, fingerprint, verified=verified, scope=scope
                )
            elif press.arg.isdigit():
                result = await self._refunds.approve(int(press.arg), agent, ticket=press.ticket)
            else:  # made before approval buttons named their ticket
                await query.answer("This button is out of date: use /approve ID.", show_alert=True)
                return
        except PlanChanged as changed:
            await query.answer(str(changed)[:200], show_alert=True)
            if changed.panel is not None and await self._may_post_panel(changed.panel.ticket):
                text = f"⚠️ {changed}\n\n{changed.panel.text}"
                await self._say(pressed, _html(text), press.ticket, self._keyboard(changed.panel))
            return
        except SupportbotError as error:
            await query.answer(str(error)[:200], show_alert=True)
            return
        await query.answer(_first_line(result.text)[:200])
        if not result.repeated:
            text = html.escape(result.text, quote=False)
            await self._say(pressed, text, result.ticket, self._approve_keyboard(result))

    async def _panel_button(
        self, query: CallbackQuery, pressed: MaybeInaccessibleMessage, ticket: int, agent: int
    ) -> None:
        if not await self._may_post_panel(ticket):
            await query.answer(
                f"The refund panel of #{ticket} was posted less than a minute ago, just above; "
                f"/refund {ticket} shows a fresh one.",
                show_alert=True,
            )
            return
        panel = await self._refunds.panel(ticket, agent)
        await query.answer(f"Refund panel of #{ticket}")
        await self._say(pressed, _html(panel.text), panel.ticket, self._keyboard(panel))

    async def _may_post_panel(self, ticket: int) -> bool:
        return (await self._desk.count_use(PANEL_POSTS, ticket)).allowed

    async def _say(
        self,
        message: MaybeInaccessibleMessage,
        text: str,
        ticket: int | None,
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Answer in the group; a post about a ticket is recorded as the ticket's, so its
        buttons are known to belong there and a reply to it is a reply to the ticket."""
        sent = await answer_agent(self._bot, self._limiter, message, text, keyboard)
        if ticket is not None:
            thread = sent.message_thread_id if sent.is_topic_message else None
            await self._places.record(ticket, POST, sent.message_id, thread)


def confirm_arg(arg: str) -> tuple[str, RefundScope, bool]:
    """A Confirm button's argument: the plan's fingerprint, its scope's letter, "v" if vouched.

    Buttons made before there were choices carry no letter: they meant everything eligible.
    """
    fingerprint, rest = arg[:12], arg[12:]
    verified = rest.endswith("v")
    letter = rest.removesuffix("v")
    try:
        scope = RefundScope.of_letter(letter) if letter else RefundScope.ALL
    except ValueError:
        scope = RefundScope.FULL  # no button confirms that: refused as naming no plan
    return fingerprint, scope, verified


class CustomerRefunds:
    """A linked customer's `/refund`: a refund-request ticket at the top of its tier."""

    def __init__(
        self,
        desk: Desk,
        policy: SlaPolicy,
        templates: Templates,
        clock: Clock,
        refunds: RefundDesk,
    ) -> None:
        self._desk = desk
        self._policy = policy
        self._templates = templates
        self._clock = clock
        self._refunds = refunds

    async def request(
        self, message: Message, ref: CustomerRef, note: str, locale: str | None = None
    ) -> str | None:
        """Open the request, or add to the one still open; returns a text to answer with when
        no ticket was opened (a new ticket's receipt is the answer)."""
        assert ref.telegram_id is not None
        now = self._clock()
        customer_id, owner = await owner_of_telegram_user(self._desk.sessions, ref.telegram_id)
        if customer_id is None or owner is None or owner.identity is not Identity.LINKED:
            return self._templates.render("telegram/refund_link_first", locale=locale)
        email = owner.account.email
        open_request = await queue.open_ticket_about(
            self._desk.sessions, customer_id, REFUND_SUBJECT
        )
        summary = await self._refunds.eligibility(owner.account) or (
            "(the billing system could not be read; the agent will look it up)"
        )
        text = self._templates.render(
            "telegram/refund_request", note=note[:500], email=email, summary=summary
        )
        ident = f"{message.chat_id}:{message.message_id}"
        intake = await self._desk.receive(
            IncomingMessage(
                customer=ref,
                channel=Channel.TELEGRAM,
                text=text,
                external_id=ident,
                dedup_key=("telegram", ident),
                reply_address=str(message.chat_id),
                subject=REFUND_SUBJECT,
                ticket=open_request,
                new_ticket=open_request is None,
                received_at=message.date,
            )
        )
        if intake.duplicate or intake.ignored:
            return None
        if intake.opened:
            await queue.first_in_tier(self._desk.sessions, self._policy, intake.ticket, now)
            return None
        if open_request is None:  # over the limit of new tickets: the desk told the customer
            return None
        return self._templates.render("telegram/refund_open", locale=locale, ticket=intake.ticket)


def _html(text: str) -> str:
    return html.escape(text, quote=False)


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]
