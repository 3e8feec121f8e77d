"""`supportbot demo` as a new user runs it: no token, no network, a readable transcript."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_shows_both_sides_and_the_queue(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "IMAP_"))}
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
