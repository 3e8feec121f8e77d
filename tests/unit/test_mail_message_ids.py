"""Composing mail without a server: long References are folded between ids, never encoded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mail.compose import ComposeError, OutgoingMail, message_bytes
from tests.mailservers import SUPPORT


def test_long_message_ids_are_folded_between_ids_never_encoded() -> None:
    long_id = "<" + "x" * 120 + "@example.org>"
    refs = tuple(f"<r{n}-{'y' * 40}@example.org>" for n in range(5))
    mail = OutgoingMail(
        sender=SUPPORT,
        sender_name="Support",
        recipient="Ann@Bücher.example",
        subject="[#7] Re: Grüße " + "long words " * 12,
        message_id="<reply-7@example.com>",
        in_reply_to=long_id,
        references=(*refs, long_id, "junk", "sha256:abc"),
        text="hello",
        html=None,
        date=datetime(2026, 11, 24, tzinfo=UTC),
    )
    data = message_bytes(mail)
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "=?" not in head.split("Subject:")[0], "no encoded words before the subject"
    assert f"In-Reply-To: {long_id}" in head
    assert "To: Ann@xn--bcher-kva.example" in head
    unfolded = head.replace("\r\n ", " ")
    references = unfolded.split("References: ", 1)[1].split("\r\n", 1)[0].split()
    assert references == [*refs, long_id]
    assert all(len(line) <= 998 for line in head.split("\r\n"))
    with pytest.raises(ComposeError):
        message_bytes(OutgoingMail(**{**mail.__dict__, "recipient": "ann@ex ample.org"}))
