"""Replicas of `supportbot run`, each a process of its own, for the replica tests and bench.

Each replica writes its log to a file; which replica leads a role is read from those logs
("leadership: this replica now leads telegram"), as an operator would read them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEADS = "leadership: this replica now leads "


class Replica:
    """One `supportbot run` process with its environment and its log file."""

    def __init__(self, name: str, environ: dict[str, str], log: Path) -> None:
        self.name = name
        self.environ = environ
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TELEGRAM_", "IMAP_", "SMTP_", "DATABASE_", "SUPPORT_"))
        }
        with self.log.open("ab") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "supportbot", "run"],
                cwd=self.log.parent,
                env={**inherited, "PYTHONPATH": str(ROOT), **self.environ},
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def leads(self, role: str) -> bool:
        """Whether the log says this replica took `role` (and it has not given it up since)."""
        text = self.logged(None)
        took = text.rfind(LEADS + role)
        gave = text.rfind(f"leadership: this replica gives up {role}")
        return self.alive and took > gave

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing gets to clean up."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, within: float = 30) -> int:
        """SIGTERM, as an orchestrator stops a replica; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(within)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def logged(self, tail: int | None = 3000) -> str:
        if not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace")
        return text if tail is None else text[-tail:]


def leader(replicas: list[Replica], role: str) -> Replica | None:
    """The live replica whose log says it leads `role`, if exactly one does."""
    leading = [r for r in replicas if r.leads(role)]
    return leading[0] if len(leading) == 1 else None


async def wait_for_leader(
    replicas: list[Replica], role: str, within: float, *, other_than: Replica | None = None
) -> tuple[Replica, float]:
    """Block until one live replica (not `other_than`) leads `role`; it and the seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        found = leader([r for r in replicas if r is not other_than], role)
        if found is not None:
            return found, time.monotonic() - started
        await asyncio.sleep(0.05)
    logs = "\n".join(f"--- {r.name}\n{r.logged()}" for r in replicas)
    raise AssertionError(f"no replica took {role} within {within:.0f} s\n{logs}")
