"""`/transcript [N]` in the agents' group: a ticket's whole history, every message in full.

Notices show at most one Telegram message of a customer's text (the feed sends a longer one as a
file), and digests only a line of each; this command is the way to read everything, whatever an
agent saw first. The answer is a `.txt` file, one group message however long the ticket, sent
straight back like `/report` (it changes nothing, so asking again is the retry). The text is the
same as `supportbot tickets show N`.
"""

from __future__ import annotations

from telegram import InputFile, Message, ReplyParameters

from bot.customers import ChatParts
from tickets import queue


async def send_transcript(parts: ChatParts, message: Message, number: int) -> None:
    """Answer `/transcript N` with ticket N as a text file, in the topic it was asked in."""
    view = await queue.QueueViews(parts.desk.sessions, parts.policy).ticket_view(
        number, parts.clock()
    )
    text = parts.templates.render("agents/transcript", view=view)
    caption = f"📄 #{number}: {len(view.messages)} message{'s' if len(view.messages) != 1 else ''}"
    async with parts.limiter.sending(message.chat_id):
        await parts.bot.send_document(
            message.chat_id,
            InputFile(f"{text}\n".encode(), filename=f"ticket-{number}.txt"),
            caption=caption,
            parse_mode=None,
            message_thread_id=message.message_thread_id if message.is_topic_message else None,
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
        )
