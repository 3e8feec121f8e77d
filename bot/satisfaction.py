"""A customer's press on a satisfaction ask's score buttons (issue 15, point 7)."""

from __future__ import annotations

import logging

from telegram import CallbackQuery
from telegram.error import TelegramError

from bot.buttons import Press
from tickets.desk import Desk
from tickets.satisfaction import SCORES, Scored

log = logging.getLogger(__name__)

ANSWERS = {
    Scored.RECORDED: "Thank you! Your score: {score}/5.",
    Scored.ALREADY: "Your score for this ticket was already counted. Thank you!",
    Scored.NOT_ASKED: "This button is not valid.",
}


async def on_score(query: CallbackQuery, press: Press, desk: Desk, user: int) -> None:
    """Record the score (the first counts, only the ticket's customer's), say so on the button,
    and take the buttons off the ask."""
    score = int(press.arg) if press.arg.isdigit() else 0
    if desk.satisfaction is None or score not in SCORES:
        outcome = Scored.NOT_ASKED
    else:
        outcome = await desk.satisfaction.record(press.ticket, score, telegram_id=user)
    if outcome is Scored.NOT_ASKED:
        await desk.refused(user, press.action.value, "a score button not for them", press.ticket)
    await query.answer(
        ANSWERS[outcome].format(score=score), show_alert=outcome is not Scored.RECORDED
    )
    if outcome is not Scored.NOT_ASKED:
        try:
            await query.edit_message_reply_markup(None)
        except TelegramError as error:  # the score is counted; stale buttons only look open
            log.warning("could not take the score buttons off #%s: %s", press.ticket, error)
