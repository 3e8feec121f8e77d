"""Tests for the local Bot API server, driven by the real python-telegram-bot client."""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from sandbox.telegram import LocalBotApi, RateLimits, SentMessage, SimulationError, sample_png

# httpx logs every request URL at INFO, and those URLs contain the bot token.
logging.getLogger("httpx").setLevel(logging.WARNING)

TOKEN = "123456:TEST-TOKEN"


@pytest.fixture
async def server() -> AsyncIterator[LocalBotApi]:
    async with LocalBotApi(
        token=TOKEN, bot_username="supportbot_test", limits=RateLimits.off()
    ) as running:
        yield running


@pytest.fixture
async def bot(server: LocalBotApi) -> AsyncIterator[telegram.Bot]:
    async with server.make_bot() as client:
        yield client


async def next_updates(bot: telegram.Bot) -> tuple[Update, ...]:
    """Fetch pending updates and confirm them, as a polling bot does."""
    updates = await bot.get_updates(timeout=1)
    if updates:
        await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    return updates


# -- protocol basics ----------------------------------------------------------------------------


async def test_get_me_describes_the_bot(server: LocalBotApi, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456
    assert me.is_bot
    assert me.username == "supportbot_test"
    assert me.can_read_all_group_messages is False  # privacy mode is on by default
    assert server.stats.requests["getMe"] == 2  # one from Bot.initialize, one explicit


async def test_wire_format_of_errors(server: LocalBotApi) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/botWRONG:TOKEN/getMe") as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        async with session.post(f"{server.base_url}{TOKEN}/noSuchMethod") as response:
            assert response.status == 404
            assert (await response.json())["description"] == "Not Found"
        async with session.post(
            f"{server.base_url}{TOKEN}/sendMessage", data={"chat_id": "42", "text": "hi"}
        ) as response:
            assert response.status == 400
            assert (await response.json())["description"] == "Bad Request: chat not found"
        async with session.get(f"{server.base_url}{TOKEN}/GETME") as response:
            body = await response.json()
            assert body["ok"] is True
            assert body["result"]["username"] == "supportbot_test"


async def test_json_bodies_are_accepted(server: LocalBotApi) -> None:
    ann = server.add_user("Ann")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.base_url}{TOKEN}/sendMessage",
            json={"chat_id": ann.id, "text": "*hi*", "parse_mode": "MarkdownV2"},
        ) as response,
    ):
        body = await response.json()
    assert body["result"]["entities"] == [{"type": "bold", "offset": 0, "length": 2}]
    assert [m.text for m in server.sent_to(ann)] == ["hi"]


async def test_multipart_upload_by_attach_uri(server: LocalBotApi) -> None:
    ann = server.add_user("Ann")
    form = aiohttp.FormData()
    form.add_field("chat_id", str(ann.id))
    form.add_field("document", "attach://report")
    form.add_field("caption", "weekly <b>report</b>")
    form.add_field("parse_mode", "HTML")
    form.add_field("report", b"a,b\n1,2\n", filename="report.csv", content_type="text/csv")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}{TOKEN}/sendDocument", data=form) as response,
    ):
        body = await response.json()
    assert body["ok"] is True, body
    assert body["result"]["document"]["file_name"] == "report.csv"
    [record] = server.sent_to(ann)
    assert (record.file_bytes, record.mime_type, record.text) == (
        b"a,b\n1,2\n",
        "text/csv",
        "weekly report",
    )


async def test_stop_ends_a_pending_long_poll_quickly() -> None:
    server = LocalBotApi(token=TOKEN)
    await server.start()
    async with server.make_bot() as bot:
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert loop.time() - started < 2
        assert await poll == ()
    with pytest.raises(RuntimeError):
        _ = server.url


# -- updates ------------------------------------------------------------------------------------


async def test_long_polling_delivers_and_offset_confirms(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    ann = server.add_user("Ann", last_name="Lee", username="ann")
    sent = await server.user_sends(ann, text="/start hello")

    updates = await bot.get_updates(timeout=1)
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None
    assert message.text == "/start hello"
    assert message.message_id == sent["message_id"]
    assert message.chat.id == ann.id == message.chat_id
    assert message.chat.type == "private"
    assert message.from_user is not None
    assert message.from_user.full_name == "Ann Lee"
    assert [e.type for e in message.entities] == ["bot_command"]

    # Not confirmed yet: the same update comes again without an offset.
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert len(server.pending_updates) == 1

    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == ()
    assert server.pending_updates == []


async def test_long_poll_is_held_until_an_update_arrives(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    ann = server.add_user("Ann")
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.3)
    assert not poll.done()
    await server.user_sends(ann, text="are you there?")
    updates = await poll
    elapsed = loop.time() - started
    assert [u.message.text for u in updates if u.message] == ["are you there?"]
    assert 0.3 <= elapsed < 2


async def test_empty_long_poll_waits_for_its_timeout(bot: telegram.Bot) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bot.get_updates(timeout=1) == ()
    assert loop.time() - started >= 0.9


async def test_all_user_content_types_parse_cleanly(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    await server.user_sends(ann, photo=sample_png(8, 6), caption="see #this")
    await server.user_sends(ann, document=("log.txt", b"trace", "text/plain"))
    await server.user_sends(ann, voice=b"OggS-voice", duration=3)
    await server.user_sends(ann, video=b"video-bytes")
    await server.user_sends(ann, audio=("song.mp3", b"ID3-audio"))
    await server.user_sends(ann, sticker="👍")
    await server.user_sends(ann, location=(52.37, 4.89))
    await server.user_sends(ann, contact=("+31200000000", "Bob"))
    await server.user_sends(ann, poll=("Lunch?", ["yes", "no"]))

    updates = await next_updates(bot)
    messages = [u.message for u in updates if u.message is not None]
    kinds = [type(m.effective_attachment).__name__ for m in messages]
    assert kinds == [
        "tuple",  # photo sizes
        "Document",
        "Voice",
        "Video",
        "Audio",
        "Sticker",
        "Location",
        "Contact",
        "Poll",
    ]
    for message in messages:
        # PTB puts every field it does not know into api_kwargs: the shapes must be exact.
        assert message.api_kwargs == {}
        attachment = message.effective_attachment
        parts = attachment if isinstance(attachment, tuple) else (attachment,)
        for part in parts:
            assert isinstance(part, telegram.TelegramObject)
            assert part.api_kwargs == {}
    photo = messages[0].photo[-1]
    assert (photo.width, photo.height) == (8, 6)
    assert messages[0].caption == "see #this"
    assert [e.type for e in messages[0].caption_entities] == ["hashtag"]
    assert messages[1].document is not None
    assert messages[1].document.file_name == "log.txt"
    assert messages[2].voice is not None
    assert messages[2].voice.mime_type == "audio/ogg"


async def test_edited_message_update(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    original = await server.user_sends(ann, text="helo")
    await next_updates(bot)
    await server.user_edits(ann, original, "hello")

    updates = await next_updates(bot)
    assert len(updates) == 1
    edited = updates[0].edited_message
    assert edited is not None
    assert updates[0].message is None
    assert edited.message_id == original["message_id"]
    assert edited.text == "hello"
    assert edited.edit_date is not None
    current = server.message(ann, original["message_id"])
    assert current is not None
    assert current["text"] == "hello"


async def test_privacy_mode_hides_group_chatter_from_a_non_admin_bot(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    group = server.add_group("Chat", bot_status="member")
    ann = server.add_user("Ann")
    await server.add_member(group, ann)
    await server.user_sends(ann, chat=group, text="just talking")
    await server.user_sends(ann, chat=group, text="/help@supportbot_test")
    await server.user_sends(ann, chat=group, text="/help@otherbot")

    updates = await next_updates(bot)
    assert [u.message.text for u in updates if u.message] == ["/help@supportbot_test"]


async def test_allowed_updates_filter_chat_member_updates(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    group = server.add_group("Agents")
    ann = server.add_user("Ann")
    await server.add_member(group, ann)
    assert await bot.get_updates(timeout=0) == ()  # chat_member is not delivered by default

    bob = server.add_user("Bob")
    await server.add_member(group, bob, status="administrator")
    updates = await bot.get_updates(timeout=0, allowed_updates=Update.ALL_TYPES)
    assert len(updates) == 1
    change = updates[0].chat_member
    assert change is not None
    assert change.new_chat_member.user.id == bob.id
    assert change.new_chat_member.status == "administrator"


# -- sending ------------------------------------------------------------------------------------


async def test_send_message_is_recorded(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    question = await server.user_sends(ann, text="my printer is on fire")
    reply = await bot.send_message(
        ann.id,
        "Ticket <b>#12</b> opened &amp; assigned",
        parse_mode="HTML",
        reply_parameters=ReplyParameters(question["message_id"]),
        disable_notification=True,
    )
    assert reply.text == "Ticket #12 opened & assigned"
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "my printer is on fire"

    [record] = server.sent_to(ann)
    assert isinstance(record, SentMessage)
    assert record.method == "sendMessage"
    assert record.message_id == reply.message_id
    assert record.text == "Ticket #12 opened & assigned"
    assert record.source_text == "Ticket <b>#12</b> opened &amp; assigned"
    assert record.parse_mode == "HTML"
    assert record.entities == ({"type": "bold", "offset": 7, "length": 3},)
    assert record.reply_to == question["message_id"]
    assert record.disable_notification is True
    assert record.thread_id is None


@pytest.mark.parametrize(
    "markup",
    [
        "a < b",
        "fish & chips",
        "<b>bold",
        "<b>x</i>",
        "x</b>",
        "line<br>break",
        "&nbsp;",
        '<span class="red">x</span>',
    ],
)
async def test_malformed_html_is_a_bad_request(
    server: LocalBotApi, bot: telegram.Bot, markup: str
) -> None:
    ann = server.add_user("Ann")
    with pytest.raises(BadRequest, match=r"(?i)Can't parse entities"):
        await bot.send_message(ann.id, markup, parse_mode="HTML")
    assert server.sent_to(ann) == []
    assert server.stats.responses[400] == 1


async def test_unescaped_markdown_v2_is_a_bad_request(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    ann = server.add_user("Ann")
    with pytest.raises(BadRequest, match=r"(?i)reserved and must be escaped"):
        await bot.send_message(ann.id, "Done. Thanks!", parse_mode="MarkdownV2")
    ok = await bot.send_message(ann.id, r"*Done*\. Thanks\!", parse_mode="MarkdownV2")
    assert ok.text == "Done. Thanks!"
    assert [m.text for m in server.sent_to(ann)] == ["Done. Thanks!"]


async def test_text_length_is_checked_in_utf16_after_parsing(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    ann = server.add_user("Ann")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ann.id, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ann.id, "😀" * 2049)  # 4098 UTF-16 code units
    await bot.send_message(ann.id, "😀" * 2048)
    await bot.send_message(ann.id, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(ann.id, "<b></b>", parse_mode="HTML")
    assert len(server.sent_to(ann)) == 2


async def test_forum_topics(server: LocalBotApi, bot: telegram.Bot) -> None:
    group = server.add_group("Support agents", forum=True)
    ann = server.add_user("Ann")
    await server.add_member(group, ann)

    topic = await bot.create_forum_topic(group.id, "Ticket #1 · printer")
    assert topic.name == "Ticket #1 · printer"
    card = await bot.send_message(group.id, "New ticket", message_thread_id=topic.message_thread_id)
    assert card.message_thread_id == topic.message_thread_id
    assert card.is_topic_message
    assert [m.text for m in server.sent_to(group, thread_id=topic.message_thread_id)] == [
        "New ticket"
    ]

    with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
        await bot.send_message(group.id, "lost", message_thread_id=9999)

    assert await bot.edit_forum_topic(group.id, topic.message_thread_id, name="Ticket #1 ✓")
    assert await bot.close_forum_topic(group.id, topic.message_thread_id)
    with pytest.raises(BadRequest, match=r"(?i)topic_not_modified"):
        await bot.close_forum_topic(group.id, topic.message_thread_id)
    [stored] = server.topics(group)
    assert (stored.thread_id, stored.name, stored.closed) == (
        topic.message_thread_id,
        "Ticket #1 ✓",
        True,
    )
    assert await bot.reopen_forum_topic(group.id, topic.message_thread_id)

    # An agent answers inside the topic, replying to the card.
    await server.user_sends(
        ann, chat=group, text="on it", thread_id=topic.message_thread_id, reply_to=card.message_id
    )
    [update] = await next_updates(bot)
    assert update.message is not None
    assert update.message.message_thread_id == topic.message_thread_id
    assert update.message.is_topic_message
    assert update.message.reply_to_message is not None
    assert update.message.reply_to_message.message_id == card.message_id

    plain = server.add_group("Not a forum")
    with pytest.raises(BadRequest, match=r"(?i)the chat is not a forum"):
        await bot.create_forum_topic(plain.id, "nope")


async def test_topic_messages_reply_to_the_topic_creation_like_telegram(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    group = server.add_group("Agents", forum=True)
    ann = server.add_user("Ann")
    await server.add_member(group, ann)
    topic = server.add_topic(group, "Ticket #2")
    await server.user_sends(ann, chat=group, text="hi", thread_id=topic.thread_id)
    [update] = await next_updates(bot)
    assert update.message is not None
    quoted = update.message.reply_to_message
    assert quoted is not None
    assert quoted.forum_topic_created is not None
    assert quoted.forum_topic_created.name == "Ticket #2"


async def test_photo_and_document_round_trip(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    image = sample_png(3, 2)
    photo_message = await bot.send_photo(
        ann.id, image, caption="<i>screenshot</i>", parse_mode="HTML"
    )
    assert photo_message.caption == "screenshot"
    photo = photo_message.photo[-1]
    assert (photo.width, photo.height) == (3, 2)
    photo_file = await bot.get_file(photo.file_id)
    assert bytes(await photo_file.download_as_bytearray()) == image

    log = b"2024-01-01 ERROR printer on fire\n" * 50
    doc_message = await bot.send_document(ann.id, log, filename="printer.log")
    assert doc_message.document is not None
    assert doc_message.document.file_name == "printer.log"
    doc_file = await doc_message.document.get_file()
    assert bytes(await doc_file.download_as_bytearray()) == log

    # Re-sending by file_id reuses the stored file; a wrong kind is refused.
    again = await bot.send_document(ann.id, doc_message.document.file_id)
    assert again.document is not None
    assert again.document.file_unique_id == doc_message.document.file_unique_id
    with pytest.raises(BadRequest, match=r"(?i)type of file mismatch"):
        await bot.send_photo(ann.id, doc_message.document.file_id)
    with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
        await bot.send_photo(ann.id, b"not an image")

    records = server.sent_to(ann)
    assert [(r.method, r.media, r.file_name) for r in records] == [
        ("sendPhoto", "photo", None),
        ("sendDocument", "document", "printer.log"),
        ("sendDocument", "document", "printer.log"),
    ]
    assert records[0].file_bytes == image
    assert records[0].text == "screenshot"
    assert records[1].file_bytes == log


async def test_bot_downloads_what_a_user_sent(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    await server.user_sends(ann, document=("invoice.pdf", b"%PDF-1.4 fake"))
    [update] = await next_updates(bot)
    assert update.message is not None
    assert update.message.document is not None
    assert update.message.document.mime_type == "application/pdf"
    file = await update.message.document.get_file()
    assert bytes(await file.download_as_bytearray()) == b"%PDF-1.4 fake"


async def test_copy_forward_edit_delete(server: LocalBotApi, bot: telegram.Bot) -> None:
    group = server.add_group("Agents", forum=True)
    topic = server.add_topic(group, "Ticket #3")
    ann = server.add_user("Ann")
    original = await server.user_sends(ann, photo=sample_png(), caption="broken screen")

    copied = await bot.copy_message(
        group.id, ann.id, original["message_id"], message_thread_id=topic.thread_id
    )
    forwarded = await bot.forward_message(group.id, ann.id, original["message_id"])
    assert forwarded.forward_origin is not None
    assert isinstance(forwarded.forward_origin, telegram.MessageOriginUser)
    assert forwarded.forward_origin.sender_user.id == ann.id

    records = server.sent_to(group)
    assert [(r.method, r.media, r.text, r.thread_id) for r in records] == [
        ("copyMessage", "photo", "broken screen", topic.thread_id),
        ("forwardMessage", "photo", "broken screen", None),
    ]
    assert records[0].message_id == copied.message_id

    card = await bot.send_message(group.id, "Status: open", message_thread_id=topic.thread_id)
    edited = await bot.edit_message_text("Status: closed", group.id, card.message_id)
    assert isinstance(edited, telegram.Message)
    assert edited.text == "Status: closed"
    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_text("Status: closed", group.id, card.message_id)
    assert [(e.method, e.text) for e in server.edits_in(group)] == [
        ("editMessageText", "Status: closed")
    ]

    assert await bot.delete_message(group.id, card.message_id)
    assert server.deleted_in(group) == [card.message_id]
    assert server.message(group, card.message_id) is None
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(group.id, card.message_id)


async def test_inline_keyboard_and_callback_query(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    keyboard = InlineKeyboardMarkup(
        [
            [InlineKeyboardButton("Solved", callback_data="solved:12")],
            [InlineKeyboardButton("Docs", url="https://example.org/help")],
        ]
    )
    sent = await bot.send_message(ann.id, "Did that help?", reply_markup=keyboard)
    [record] = server.sent_to(ann)
    assert record.callback_data() == ["solved:12"]

    query_id = await server.press_button(ann, record, "solved:12")
    [update] = await next_updates(bot)
    query = update.callback_query
    assert query is not None
    assert query.id == query_id
    assert query.data == "solved:12"
    assert query.from_user.id == ann.id
    assert query.message is not None
    assert query.message.message_id == sent.message_id

    assert await query.answer("Thanks!")
    answer = server.callback_answer(query_id)
    assert answer is not None
    assert answer.text == "Thanks!"
    assert answer.show_alert is False
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query_id)

    with pytest.raises(SimulationError):
        await server.press_button(ann, record, "no-such-button")
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(
            ann.id,
            "too much data",
            reply_markup=InlineKeyboardMarkup(
                [[InlineKeyboardButton("x", callback_data="d" * 65)]]
            ),
        )


async def test_members_chats_commands_and_actions(server: LocalBotApi, bot: telegram.Bot) -> None:
    group = server.add_group("Agents", forum=True)
    ann = server.add_user("Ann")
    stranger = server.add_user("Sam")
    await server.add_member(group, ann, status="administrator")

    member = await bot.get_chat_member(group.id, ann.id)
    assert isinstance(member, telegram.ChatMemberAdministrator)
    assert member.can_manage_topics
    assert (await bot.get_chat_member(group.id, stranger.id)).status == "left"
    assert (await bot.get_chat_member(group.id, bot.id)).status == "administrator"
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.get_chat_member(-100, ann.id)

    chat = await bot.get_chat(group.id)
    assert chat.is_forum
    assert chat.title == "Agents"

    commands = [telegram.BotCommand("start", "Open a ticket"), telegram.BotCommand("help", "Help")]
    assert await bot.set_my_commands(commands)
    assert await bot.get_my_commands() == tuple(commands)
    assert server.commands() == [
        {"command": "start", "description": "Open a ticket"},
        {"command": "help", "description": "Help"},
    ]
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([telegram.BotCommand("Bad Name", "x")])
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()

    assert await bot.send_chat_action(ann.id, "typing")
    assert [a.action for a in server.chat_actions(ann)] == ["typing"]


# -- failures -----------------------------------------------------------------------------------


async def test_blocked_user_gives_forbidden(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    await bot.send_message(ann.id, "welcome")
    server.block_bot(ann)
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(ann.id, "are you still there?")
    [update] = await next_updates(bot)
    assert update.my_chat_member is not None
    assert update.my_chat_member.new_chat_member.status == "kicked"
    assert [m.text for m in server.sent_to(ann)] == ["welcome"]

    never_started = server.add_user("Nia", started=False)
    with pytest.raises(Forbidden, match=r"(?i)can't initiate conversation"):
        await bot.send_message(never_started.id, "hello?")


async def test_injected_502_raises_network_error(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    server.fail_next("sendMessage", status=502, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError):
            await bot.send_message(ann.id, "hello")
    await bot.send_message(ann.id, "hello")
    assert [m.text for m in server.sent_to(ann)] == ["hello"]
    assert server.stats.injected_failures == 2
    assert server.stats.responses[502] == 2


async def test_injected_failure_can_target_a_chat_and_still_execute(
    server: LocalBotApi, bot: telegram.Bot
) -> None:
    ann = server.add_user("Ann")
    bob = server.add_user("Bob")
    server.fail_next("sendMessage", status=500, chat_id=bob, executed=True)
    await bot.send_message(ann.id, "to ann")
    with pytest.raises(NetworkError):
        await bot.send_message(bob.id, "to bob")
    # The message went out even though the bot saw an error: the classic duplicate trap.
    assert [m.text for m in server.sent_to(bob)] == ["to bob"]
    assert [m.text for m in server.sent_to(ann)] == ["to ann"]


# -- rate limits --------------------------------------------------------------------------------


@pytest.fixture
async def limited_server() -> AsyncIterator[LocalBotApi]:
    async with LocalBotApi(token=TOKEN, limits=RateLimits.telegram()) as running:
        yield running


@pytest.fixture
def timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    # Opt into PTB's timedelta-valued RetryAfter.retry_after (avoids a deprecation warning).
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.mark.usefixtures("timedelta_retry_after")
async def test_second_private_message_within_a_second_gets_429(
    limited_server: LocalBotApi,
) -> None:
    server = limited_server
    ann = server.add_user("Ann")
    async with server.make_bot() as bot:
        await bot.send_message(ann.id, "one")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(ann.id, "two")
    retry_after = caught.value.retry_after
    assert isinstance(retry_after, dtm.timedelta)
    assert retry_after >= dtm.timedelta(seconds=1)
    assert [m.text for m in server.sent_to(ann)] == ["one"]  # refused sends do not count
    assert server.stats.too_many_requests_total == 1
    assert server.stats.too_many_requests_by_chat == {ann.id: 1}


@pytest.mark.usefixtures("timedelta_retry_after")
async def test_twenty_first_group_message_within_a_minute_gets_429(
    limited_server: LocalBotApi,
) -> None:
    server = limited_server
    group = server.add_group("Agents")
    async with server.make_bot() as bot:
        for number in range(20):
            await bot.send_message(group.id, f"card {number}")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(group.id, "card 20")
    retry_after = caught.value.retry_after
    assert isinstance(retry_after, dtm.timedelta)
    assert retry_after >= dtm.timedelta(seconds=50)
    assert len(server.sent_to(group)) == 20
    assert server.stats.too_many_requests_by_chat == {group.id: 1}


@pytest.mark.usefixtures("timedelta_retry_after")
async def test_a_new_forum_topic_counts_against_the_groups_twenty_a_minute(
    limited_server: LocalBotApi,
) -> None:
    server = limited_server
    group = server.add_group("Agents", forum=True)
    async with server.make_bot() as bot:
        for number in range(10):
            topic = await bot.create_forum_topic(group.id, f"#{number}")
            await bot.send_message(group.id, "card", message_thread_id=topic.message_thread_id)
        with pytest.raises(RetryAfter):
            await bot.create_forum_topic(group.id, "#10")
        with pytest.raises(RetryAfter):
            await bot.send_message(group.id, "card 10")
    assert len(server.topics(group)) == 10, "a refused topic is not created"
    assert len(server.sent_to(group)) == 10
    assert server.stats.too_many_requests_by_chat == {group.id: 2}


async def test_429_wire_format(limited_server: LocalBotApi) -> None:
    server = limited_server
    ann = server.add_user("Ann")
    url = f"{server.base_url}{TOKEN}/sendMessage"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data={"chat_id": str(ann.id), "text": "a"}) as response:
            assert response.status == 200
        async with session.post(url, data={"chat_id": str(ann.id), "text": "b"}) as response:
            assert response.status == 429
            assert await response.json() == {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            }


async def test_limits_off_never_refuses(server: LocalBotApi, bot: telegram.Bot) -> None:
    ann = server.add_user("Ann")
    group = server.add_group("Agents")
    for number in range(25):
        await bot.send_message(ann.id, f"private {number}")
        await bot.send_message(group.id, f"group {number}")
    assert server.stats.too_many_requests_total == 0
    assert len(server.sent_to(ann)) == len(server.sent_to(group)) == 25


# -- the markup parsers -------------------------------------------------------------------------


# -- a whole Application ------------------------------------------------------------------------


async def test_application_answers_a_user_through_polling(server: LocalBotApi) -> None:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        text = f"You said: {update.effective_message.text}"
        await update.effective_message.reply_text(text, do_quote=True)

    application: Application[Any, Any, Any, Any, Any, Any] = (
        ApplicationBuilder()
        .token(server.token)
        .base_url(server.base_url)
        .base_file_url(server.base_file_url)
        .build()
    )
    application.add_handler(MessageHandler(filters.TEXT, echo))
    ann = server.add_user("Ann")
    await application.initialize()
    await application.start()
    assert application.updater is not None
    await application.updater.start_polling(timeout=1, poll_interval=0)
    try:
        await server.user_sends(ann, text="my screen is black")
        [answer] = await server.wait_for_sent(ann, timeout=5)
    finally:
        await application.updater.stop()
        await application.stop()
        await application.shutdown()
    assert answer.text == "You said: my screen is black"
    assert answer.reply_to == 1
    assert server.pending_updates == []  # the shutdown confirmed the processed update
    assert server.stats.requests["deleteWebhook"] == 1
