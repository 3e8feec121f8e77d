"""The threading headers of every mail we send on a ticket: answers, receipts and notices.

One function builds them, so an agent's answer, an automatic receipt and an account notice
thread alike in the customer's mail program: a Message-ID of our own (kept, so the customer's
reply to it finds the ticket again), `In-Reply-To` the customer's mail, `References` the
ticket's latest Message-IDs, and the ticket's tag in the subject.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tickets.deferred_writes import Unwritten
from tickets.payloads import MailHeaders
from tickets.tables import mail_ids

# The References header names at most this many of a ticket's Message-IDs, the newest.
REFERENCES_KEPT = 20

_EARLIER_MAIL_IDS = (
    select(mail_ids.c.message_id)
    .where(mail_ids.c.ticket_id == bindparam("ticket_id"))
    .order_by(mail_ids.c.id.desc())
    .limit(REFERENCES_KEPT)
)
_NEW_MAIL_ID = insert(mail_ids)


async def thread_headers(
    connection: AsyncConnection,
    *,
    ticket_id: int,
    subject: str,
    in_reply_to: str | None,
    kind: str,
    at: datetime,
    domain: str,
    unwritten: Unwritten | None = None,
) -> MailHeaders:
    """Threading headers for a mail we send on a ticket; its Message-ID is kept for replies.

    `kind` names the mail in its Message-ID (reply, receipt, notice); a reply's subject gets
    "Re:". With `unwritten`, the Message-ID is kept with the batch's other deferred writes.
    """
    message_id = f"<{kind}-{ticket_id}-{uuid.uuid4().hex[:16]}@{domain}>"
    mine: list[str] = []
    if unwritten is not None:
        mine = [m for m, t in reversed(unwritten.threads.items()) if t == ticket_id]
    earlier: list[str] = []
    if unwritten is None or ticket_id not in unwritten.opened:  # else all its mail is mine
        found = await connection.execute(_EARLIER_MAIL_IDS, {"ticket_id": ticket_id})
        earlier = list(found.scalars())
    earlier = [*mine, *earlier][:REFERENCES_KEPT]
    if unwritten is not None:
        unwritten.add_mail_id(message_id, ticket_id, at)
    else:
        await connection.execute(
            _NEW_MAIL_ID, {"message_id": message_id, "ticket_id": ticket_id, "created_at": at}
        )
    subject = subject or "Your support request"
    if kind == "reply" and not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    return {
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": list(reversed(earlier)),
        "subject_line": f"[#{ticket_id}] {subject}",
    }
