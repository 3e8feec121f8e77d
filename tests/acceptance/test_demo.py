"""`supportbot demo` as a new user runs it: no token, no network, a readable transcript."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^ *\d+\.\d+s  (?P<header>.+)\n(?P<body>(?: {8}│.*\n?)*)", re.MULTILINE)


def blocks(out: str) -> list[tuple[str, str]]:
    """The transcript as (header, text) pairs: `bot → Ann` and what Ann saw."""
    return [
        (m["header"], "\n".join(line[10:] for line in m["body"].splitlines()))
        for m in _BLOCK.finditer(out)
    ]


def header(text: str, name: str) -> str:
    """The value of one header line in a mail as the transcript shows it."""
    found = re.search(rf"^{name}: (.*)$", text, re.MULTILINE)
    assert found is not None, f"no {name} in\n{text}"
    return found.group(1)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_demo_shows_both_sides_and_the_queue(tmp_path: Path) -> None:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "IMAP_", "SMTP_", "SUPPORT_ADDRESS"))
    }
    environ["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "supportbot", "demo"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Ann → bot" in out and "Bob → bot" in out
    assert "bot → Ann" in out and "Your ticket number is #1" in out
    assert "bot → agents' group, topic" in out and "[🙋 Claim] [✅ Close]" in out
    queue = out.split("— The queue: Bob is Pro")[1].split("Sam →")[0]
    assert queue.index("#2  PRO") < queue.index("#1  basic"), "Pro first while neither is at risk"
    assert "bot → Bob\n        │ Sorry about that!" in out
    assert "reply sent on Telegram" in out
    assert "Note added to #1" in out
    ann_lines = [line for line in out.split("bot → Ann")[1:] if "deposit tx" in line.split("\n")[1]]
    assert ann_lines == [], "the note never reaches Ann"
    assert "Telegram answered 429 0 times" in out
    assert "123456:" not in result.stderr and "DEMO-LOCAL-TOKEN" not in result.stderr + out
    assert list(tmp_path.iterdir()) == [], "the demo leaves nothing behind"

    ledger_scene(out)
    email_scene(out)
    refund_scene(out)
    watch_and_report_scene(out)
    russian_scene(out)


def ledger_scene(out: str) -> None:
    """Bob's plan comes from the imported ledger, through /link; nobody sets it by hand."""
    scene = out.split("— The billing system's export")[1].split("— The queue: Bob is Pro", 1)[0]
    assert "account,ACC-1001,bob@example.com,pro," in scene
    assert "imported: accounts: 2 created, 0 updated; payments: 2 added; usage: 1 added" in scene
    shown = blocks(scene)
    [code_mail] = [text for who, text in shown if who.startswith("bot → bob@example.com (email")]
    assert "Your code to link Telegram to your account:" in code_mail
    assert any("linked to the account bob@example.com" in text for who, text in shown)
    assert "Bob's plan is Pro because the imported ledger says so" in scene
    card = next(text for who, text in shown if text.startswith("🆕 #2 · PRO · telegram · Bob"))
    assert "👤 bob@example.com · linked by email code" in card


def email_scene(out: str) -> None:
    """Carol's mail, the receipt and Sam's answer with threading headers, her answer: one ticket."""
    shown = blocks(out)
    carol = [text for who, text in shown if who == "Carol → support@demo.example (email)"]
    sent = [text for who, text in shown if who.startswith("bot → carol@example.com (email")]
    assert len(carol) == 2 and len(sent) == 2, "Carol writes twice; a receipt and an answer"
    first, answer = carol
    receipt, reply = sent
    subject = "Invoice INV-2026-1142 shows our old VAT number"
    assert header(first, "From") == "Carol Example <carol@example.com>"
    assert header(first, "Subject") == subject
    first_id = header(first, "Message-ID")
    assert "our old VAT number DE123456789" in first

    assert header(receipt, "Subject") == f"[#3] {subject}"
    assert "Your ticket number is #3" in receipt
    assert header(reply, "From") == "Support <support@demo.example>"
    assert header(reply, "To") == "carol@example.com"
    assert header(reply, "Subject") == f"[#3] Re: {subject}"
    reply_id = header(reply, "Message-ID")
    assert reply_id.startswith("<reply-3-") and reply_id.endswith("@demo.example>")
    assert header(reply, "In-Reply-To") == first_id
    assert header(reply, "References").split() == [first_id, header(receipt, "Message-ID")]
    assert "Hi Carol, done: the corrected invoice" in reply

    assert header(answer, "Subject") == f"Re: [#3] Re: {subject}"
    assert header(answer, "In-Reply-To") == reply_id

    group = [(who, text) for who, text in shown if who.startswith("bot → agents' group")]
    card = [who for who, text in group if text.startswith("🆕 #3 · BASIC · email · Carol Example")]
    delivered = [
        who for who, text in group if "✅ #3: reply sent by email to carol@example.com" in text
    ]
    followed = [
        who for who, text in group if text.startswith("💬 #3 · Carol Example\nGot it, thank you!")
    ]
    assert len(card) == len(delivered) == len(followed) == 1
    assert card[0] == delivered[0] == followed[0], "one ticket, one topic"
    assert card[0].startswith("bot → agents' group, topic ")
    assert "joined ticket #3" in out and "still 3 tickets in all" in out
    assert "#3  basic  Carol Example" in out.split("Carol's answer waits on us")[1]


def refund_scene(out: str) -> None:
    """Bob's /refund: the request card, Sam's panel and confirmation, Ada's /paid, Bob's notices."""
    shown = blocks(out)
    group = [text for who, text in shown if who.startswith("bot → agents' group")]
    bob = [text for who, text in shown if who == "bot → Bob"]
    # The request shows as its card, or first as a digest line when the group's budget is spent.
    card = next(t for t in group if "Refund request (sent with /refund" in t)
    assert "Refundable now: $54.00" in card and "TBobTronWallet9" in card
    [panel] = [t for t in group if t.startswith("💸 Refund for #4 · bob@example.com")]
    assert "$35.00 of $40.00" in panel and "✅ refundable until" in panel
    assert "[✅ Refund everything: $54.00] [✅ Only the Pro upgrade: $19.00]" in panel
    assert any(t.startswith("✅ Refund 1 done: $54.00, Pro upgrade included") for t in group)
    [notice] = [t for t in bob if t.startswith("Your refund is on its way")]
    assert "$35.00 in USDT on tron to TBobTronWallet9" in notice
    assert "$19.00 (Pro upgrade) in BTC on bitcoin to bc1qbobwallet7x" in notice
    assert "back on the Basic plan" in notice
    moved = "#4 is now BASIC (was PRO): the Pro upgrade was refunded"
    assert any(moved in t for t in group), "the request moved to Basic with the account"
    hashes = [t for t in bob if "Transaction hash: 0x" in t]
    assert len(hashes) == 2, "Bob is told each payout's hash"
    assert "Ada → agents' group" in out and "/paid 1 0x" in out


def watch_and_report_scene(out: str) -> None:
    """Dan's four-day-old question: the breach warning and the admins called; then /report."""
    scene = out.split("— The SLA watch")[1]
    assert "#5 · BASIC BREACHED the 24-hour SLA" in scene
    assert "nobody has claimed it" in scene and "Admins: Ada." in scene
    report = scene.split("— The month's SLA report")[1]
    assert "Sam → agents' group\n        │ /report" in report
    assert "SLA report " in report and "Breaches: 1" in report and "#5 basic telegram" in report
    assert "bot → agents' group\n        │ [photo] Response times" in report, "the chart"


def russian_scene(out: str) -> None:
    """Ivan's Telegram speaks Russian: his receipt and /status are Russian, until /language es."""
    scene = dict(blocks(out.split("— Languages")[1]))
    ivan = [text for head, text in blocks(out.split("— Languages")[1]) if head == "bot → Ivan"]
    assert ivan[0].startswith("Спасибо, мы получили ваше сообщение. Номер вашего обращения — #6.")
    assert "(в течение 24 рабочих часов)" in ivan[0]
    assert ivan[1].startswith("Ваши открытые обращения:\n#6 — ждёт нашего ответа, срок — ")
    assert ivan[2] == "Hecho: a partir de ahora le escribiré en español."
    assert ivan[3].startswith("Sus tickets abiertos:\n#6 — esperando nuestra respuesta, plazo: ")
    assert "Ivan → bot" in scene
