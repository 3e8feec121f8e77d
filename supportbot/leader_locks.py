"""The SQL of leadership: PostgreSQL session advisory locks on a connection of their own.

A role's lock is `(LEADER_LOCK, hashtext(<schema>/<role>))`, so two deployments that share one
database in different schemas (the tests do) never hold each other's roles. The connection is
opened outside the pool, with TCP keepalives short enough that the server notices a leader that
vanished from the network within seconds and frees its locks.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

LEADER_LOCK = 0x5B0_1EAD  # advisory lock class of the replicas' roles
KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "2",
    "application_name": "supportbot-leadership",
}
_TRY = text("SELECT pg_try_advisory_lock(:lock, hashtext(current_schema() || '/' || :role))")
_UNLOCK = text("SELECT pg_advisory_unlock(:lock, hashtext(current_schema() || '/' || :role))")
_PING = text("SELECT 1")


async def try_lock(connection: AsyncConnection, role: str) -> bool:
    """Take the role's lock if nobody holds it; True when this connection holds it now."""
    held = await connection.scalar(_TRY, {"lock": LEADER_LOCK, "role": role})
    await connection.commit()
    return bool(held)


async def unlock(connection: AsyncConnection, role: str) -> None:
    """Give the role's lock back, keeping the connection (for the others it holds)."""
    await connection.scalar(_UNLOCK, {"lock": LEADER_LOCK, "role": role})
    await connection.commit()


async def ping(connection: AsyncConnection) -> None:
    """A round trip on the lock connection: it fails when the connection is gone."""
    await connection.scalar(_PING)
    await connection.commit()
