"""Waiting that a shutdown cuts short: the service's loops sleep here, so `stop` ends them at once.

Every background loop (the periodic jobs, the plan refresh, the SLA credit run, the placing of
tickets in the agents' group, the reconnecting channels) waits between rounds with
`sleep_until_stopped`, and the jobs that run on a timer use `run_every`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


async def sleep_until_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_every(
    seconds: float,
    job: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    log: logging.Logger,
    failed: str,
) -> None:
    """Run `job` now and then every `seconds` until `stop`; a failure is logged as `failed`
    (with its traceback) and the job runs again next time."""
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("%s", failed)
        await sleep_until_stopped(stop, seconds)
