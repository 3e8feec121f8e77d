"""Inline buttons on ticket cards. Their callback data is signed, so a forged or altered press is
recognised and refused instead of acting on whatever ticket number it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from telegram import InlineKeyboardButton, InlineKeyboardMarkup


class Action(StrEnum):
    CLAIM = "claim"
    RELEASE = "release"
    CLOSE = "close"
    REOPEN = "reopen"
    BALANCE = "balance"
    # Refunds (bot/refunds.py): open the panel, confirm a plan, approve a held refund.
    REFUND = "refund"
    CONFIRM_REFUND = "rconf"
    APPROVE_REFUND = "rappr"
    # Reply drafts (bot/console.py, REPLY_MODE=confirm); the argument is the draft's id.
    DRAFT_SEND = "dsend"
    DRAFT_NOTE = "dnote"
    DRAFT_DISCARD = "ddisc"
    # Search and history results (bot/console_search.py): the argument is the ticket to open;
    # the press's ticket is the one whose topic the list is in (0: the group's general chat).
    OPEN = "open"
    # A customer's satisfaction score (bot/satisfaction.py); the argument is the score, 1–5.
    CSAT = "csat"


LABELS = {
    Action.CLAIM: "🙋 Claim",
    Action.RELEASE: "↩️ Release",
    Action.CLOSE: "✅ Close",
    Action.REOPEN: "♻️ Reopen",
    Action.BALANCE: "💰 Balance",
    Action.REFUND: "💸 Refund",
}


@dataclass(frozen=True)
class Press:
    action: Action
    ticket: int  # the ticket whose card (or post) the button is on
    # CONFIRM_REFUND: the plan's fingerprint (and "v" if the agent vouched); APPROVE_REFUND: the
    # refund's id.
    arg: str = ""


class ButtonSigner:
    """Signs and checks `action:ticket:mac` (well inside Telegram's 64-byte limit)."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"supportbot buttons\0" + secret.encode()).digest()

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:9]
        return base64.urlsafe_b64encode(digest).decode()

    def data(self, action: Action, ticket: int, arg: str = "") -> str:
        body = f"{action.value}:{ticket}" + (f":{arg}" if arg else "")
        data = f"{body}:{self._mac(body)}"
        if len(data.encode()) > 64:
            raise ValueError(f"button data over Telegram's 64 bytes: {data!r}")
        return data

    def check(self, data: str | None) -> Press | None:
        """The press a button's data stands for, or None when it was not made by us."""
        if not data or len(data) > 64:
            return None
        body, _, mac = data.rpartition(":")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        action, _, rest = body.partition(":")
        number, _, arg = rest.partition(":")
        try:
            return Press(Action(action), int(number), arg)
        except ValueError:
            return None

    def card_keyboard(
        self, ticket: int, *, claimed: bool = False, closed: bool = False
    ) -> InlineKeyboardMarkup:
        """The buttons under a ticket's card, matching its state."""
        if closed:
            actions = [Action.REOPEN, Action.BALANCE]
        else:
            actions = [Action.RELEASE if claimed else Action.CLAIM, Action.CLOSE, Action.BALANCE]
        rows = [
            [InlineKeyboardButton(LABELS[a], callback_data=self.data(a, ticket)) for a in actions]
        ]
        if not closed:
            rows.append([self.button(LABELS[Action.REFUND], Action.REFUND, ticket)])
        return InlineKeyboardMarkup(rows)

    def button(
        self, label: str, action: Action, number: int, arg: str = ""
    ) -> InlineKeyboardButton:
        """One signed button."""
        return InlineKeyboardButton(label, callback_data=self.data(action, number, arg))
