"""Pushing updates to a webhook, as Telegram does once `setWebhook` is called.

Each pending update is POSTed as JSON to the webhook's URL with the secret in the
`X-Telegram-Bot-Api-Secret-Token` header; it is dropped from the queue only when the bot's
server answers 2xx, otherwise it is tried again shortly (Telegram keeps trying for hours). One
update is in flight at a time, so updates arrive in order. `getUpdates` answers 409 meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiohttp

from .world import World

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
RETRY_SECONDS = 0.5


@dataclass
class WebhookStats:
    """What the pusher did: answers by status, and the update ids the bot's server took."""

    statuses: dict[int, int] = field(default_factory=dict)
    delivered: list[int] = field(default_factory=list)
    errors: int = 0


async def push_updates(world: World, stats: WebhookStats) -> None:
    """Run until the server closes: deliver pending updates to the webhook while one is set."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        while not world.closing:
            hook = world.webhook
            if hook is None or not world.pending_updates:
                await world.updates_signal.wait(0.2 if hook is not None else 1.0)
                continue
            update = world.pending_updates[0]
            headers = {SECRET_HEADER: str(hook["secret_token"])} if hook.get("secret_token") else {}
            try:
                async with client.post(str(hook["url"]), json=update, headers=headers) as answer:
                    stats.statuses[answer.status] = stats.statuses.get(answer.status, 0) + 1
                    taken = 200 <= answer.status < 300
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                log.debug("webhook %s: %s", hook["url"], error)
                stats.errors += 1
                taken = False
            if taken:
                if world.pending_updates and world.pending_updates[0] is update:
                    world.pending_updates.pop(0)
                stats.delivered.append(int(update["update_id"]))
                world.changed()
            else:
                await asyncio.sleep(RETRY_SECONDS)
