"""The service in a process of its own, for benchmarks that drive it from outside.

In production the service and Telegram's servers do not share a CPU, let alone an interpreter.
Run in the benchmark's own process, the service would share one event loop with the local Bot
API server and the scripted customers, and every request the server answers would delay the
service. `ServiceProcess` starts `supportbot.app.run` in a spawned child with the settings given
as environment values; the parent asks it for its CPU time and stops it over a pipe, and gets
back the warnings and errors it logged.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from supportbot import app
from supportbot.settings import load_settings

__all__ = ["LogTally", "ServiceProcess"]


class LogTally(logging.Handler):
    """Counts the service's warnings and errors by message template (nothing is printed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}: {record.msg}"] += 1


def _child(environ: dict[str, str], pipe: Connection) -> None:
    """The child: run the service until the parent says "stop"; answer "cpu" meanwhile."""
    tally = LogTally()
    logging.getLogger().addHandler(tally)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def main() -> str:
        settings = load_settings(environ, env_file=None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def listen() -> None:
            while True:
                command = pipe.recv()
                if command == "cpu":
                    times = os.times()
                    pipe.send(times.user + times.system)
                elif command == "stop":
                    loop.call_soon_threadsafe(stop.set)
                    return

        threading.Thread(target=listen, daemon=True).start()
        try:
            await app.run(settings, stop)
        except Exception as error:
            return f"the service failed: {error!r}"
        return "" if stop.is_set() else "the service stopped by itself"

    outcome = asyncio.run(main())
    pipe.send(("ended", outcome, dict(tally.counts)))


class ServiceProcess:
    """A running service in a child process."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_child, args=(dict(environ), child), daemon=True)
        self.logs: Counter[str] = Counter()

    def start(self) -> None:
        self._process.start()

    def done(self) -> bool:
        return not self._process.is_alive()

    async def cpu(self) -> float:
        """The child's CPU seconds so far."""
        answer = await self._ask("cpu")
        if not isinstance(answer, float):
            raise RuntimeError(f"the service process answered {answer!r}")
        return answer

    def kill(self) -> None:
        """SIGKILL the service, as a crash or the OOM killer would: nothing gets to clean up."""
        self._process.kill()
        self._process.join(10)

    async def stop(self, within: float) -> str:
        """Stop the service; what went wrong, if anything (empty when it stopped cleanly)."""
        if self.done():
            answer = self._pipe.recv() if self._pipe.poll(0) else None
            if isinstance(answer, tuple) and answer[0] == "ended":
                self.logs = Counter(answer[2])
                return str(answer[1])
            return f"the service process ended (exit code {self._process.exitcode})"
        answer = await self._ask("stop", wait=within)
        await asyncio.to_thread(self._process.join, 10)
        if not (isinstance(answer, tuple) and answer[0] == "ended"):
            self._process.kill()
            return f"the service did not stop within {within:.0f} s; killed"
        self.logs = Counter(answer[2])
        return str(answer[1])

    async def _ask(self, command: str, wait: float = 10.0) -> Any:
        def exchange() -> Any:
            self._pipe.send(command)
            if not self._pipe.poll(wait):
                return None
            return self._pipe.recv()

        return await asyncio.to_thread(exchange)
