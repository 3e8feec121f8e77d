"""`/report [YYYY-MM]` in the agents' group: the month's SLA report as text, then its chart.

The answer goes straight back to the group through the bot (like `/queue` and `/stats`), paced
by the shared limiter, rather than through the outbox: it changes nothing, so an answer lost to
a network failure is had again by asking again, and the chart's PNG never sits in the database.
The chart is drawn in a worker thread so the bot keeps serving while matplotlib works.
"""

from __future__ import annotations

import asyncio
import html
import logging

from telegram import InputFile, Message, ReplyParameters
from telegram.constants import ParseMode

from bot.customers import ChatParts
from bot.format import MAX_CAPTION, MAX_TEXT, clip, utf16_len
from tickets.errors import SupportbotError
from tickets.rendering import Templates
from tickets.reports import monthly
from tickets.reports.chart import render_png
from tickets.reports.figures import InvalidMonth, Month, MonthlyReport

log = logging.getLogger(__name__)

# What the Telegram text shows before it says "… and N more": tried in turn until the text fits.
TELEGRAM_LIMITS = ((10, 10, 12, 10), (5, 5, 8, 6), (3, 3, 5, 4), (0, 0, 3, 3))


def telegram_text(templates: Templates, report: MonthlyReport, *, room: int = MAX_TEXT) -> str:
    """The report as one Telegram message: shorter lists until it fits `room` UTF-16 units."""
    text = ""
    for late, overdue, agents, tags in TELEGRAM_LIMITS:
        text = monthly.report_text(
            templates, report, late=late, overdue=overdue, agents=agents, tags=tags
        )
        if utf16_len(text) <= room:
            return text
    return clip(text, room)


async def send_report(parts: ChatParts, message: Message, agent: int, args: str) -> None:
    """Answer `/report [YYYY-MM]` (default: the current month so far) with text and chart."""
    now = parts.clock()
    try:
        month = Month.parse(args) if args.strip() else None
        report, _ = await monthly.load(parts.desk.sessions, parts.policy, now, month)
    except InvalidMonth as error:
        await parts.desk.refused(agent, "report", str(error))
        raise
    text = telegram_text(parts.templates, report)
    thread = message.message_thread_id if message.is_topic_message else None
    reply = ReplyParameters(message.message_id, allow_sending_without_reply=True)
    async with parts.limiter.sending(message.chat_id):
        await parts.bot.send_message(
            message.chat_id,
            f"<pre>{html.escape(text, quote=False)}</pre>",
            parse_mode=ParseMode.HTML,
            message_thread_id=thread,
            reply_parameters=reply,
        )
    try:
        png = await asyncio.to_thread(render_png, report)
    except Exception as error:  # the figures went out; a chart that fails must not hide them
        log.exception("the chart of %s could not be drawn", report.period.month)
        raise SupportbotError(f"the chart could not be drawn ({type(error).__name__})") from None
    async with parts.limiter.sending(message.chat_id):
        await parts.bot.send_photo(
            message.chat_id,
            InputFile(png, filename=f"sla-report-{report.period.month}.png"),
            caption=clip(monthly.caption(parts.templates, report), MAX_CAPTION),
            parse_mode=None,
            message_thread_id=thread,
            reply_parameters=reply,
        )
