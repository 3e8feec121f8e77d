"""The agents' feed under a burst (issue 16, part 2): digest lines keep the unverified-sender
warning and each message's own sender, as the local Bot API server received them."""

from __future__ import annotations

from tests.integration.test_telegram_senders import RigFactory, make_rig  # noqa: F401 - fixture
from tickets.model import Channel, CustomerRef, IncomingMessage


def _mail(address: str, name: str, text: str, *, auth: str, **extra: object) -> IncomingMessage:
    return IncomingMessage(
        customer=CustomerRef(name=name, email=address),
        channel=Channel.EMAIL,
        text=text,
        subject="Help",
        auth=auth,
        sender_address=address,
        sender_name=name,
        **extra,  # type: ignore[arg-type]
    )


async def test_digest_lines_carry_the_warning_and_the_messages_own_sender(
    make_rig: RigFactory,  # noqa: F811 - the fixture imported above
) -> None:
    rig = await make_rig(forum=False, run_worker=False)
    numbers = []
    for n in range(30):
        auth = "fail" if n % 3 == 0 else "pass"
        incoming = _mail(f"c{n}@example.org", f"Cust{n}", f"question {n}", auth=auth)
        numbers.append((await rig.desk.receive(incoming)).ticket)
    owner = numbers[1]
    colleague = _mail("carl@example.org", "Carl", "about ticket one", auth="pass", ticket=owner)
    await rig.desk.receive(colleague)
    await rig.worker.run_once()  # more notices than the budget spares: digests
    assert rig.feed.stats.digests >= 1
    lines = [line for text in rig.group_texts() for line in text.splitlines()]
    for n, number in enumerate(numbers):
        [line] = [x for x in lines if x.startswith(f"🆕 #{number} ")]
        assert ("⚠️ unverified sender" in line) == (n % 3 == 0), line
    [line] = [x for x in lines if x.startswith(f"💬 #{owner} ")]
    assert "Carl" in line and "Cust1" not in line and "about ticket one" in line
