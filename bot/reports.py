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
from bot.format import MAX_CAPTION, clip
from supportbot import reporting
from tickets.errors import SupportbotError
from tickets.report_chart import render_png
from tickets.reports import InvalidMonth, Month

log = logging.getLogger(__name__)


async def send_report(parts: ChatParts, message: Message, agent: int, args: str) -> None:
    """Answer `/report [YYYY-MM]` (default: the current month so far) with text and chart."""
    now = parts.clock()
    try:
        month = Month.parse(args) if args.strip() else None
        report, _ = await reporting.load(parts.desk.sessions, parts.policy, now, month)
    except InvalidMonth as error:
        await parts.desk.refused(agent, "report", str(error))
        raise
    text = reporting.telegram_text(parts.templates, report)
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
            caption=clip(reporting.caption(parts.templates, report), MAX_CAPTION),
            parse_mode=None,
            message_thread_id=thread,
            reply_parameters=reply,
        )
