"""The agents' allowlist: only listed Telegram users act on tickets, with role agent or admin."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tickets import audit
from tickets.errors import AgentNotFound
from tickets.model import Role
from tickets.tables import Agent


async def add_agent(
    session: AsyncSession, telegram_id: int, role: Role, name: str, *, at: datetime, actor: str
) -> bool:
    """Allow a Telegram user to act as an agent (or change their role); True if newly added."""
    agent = (await session.scalars(select(Agent).where(Agent.telegram_id == telegram_id))).first()
    created = agent is None or agent.removed_at is not None
    if agent is None:
        agent = Agent(telegram_id=telegram_id, name=name, role=role.value, added_at=at)
        session.add(agent)
        await session.flush()
    else:
        agent.role = role.value
        agent.removed_at = None
        if name:
            agent.name = name
        if created:
            agent.added_at = at
    audit.record(
        session,
        at=at,
        action="agent_add" if created else "agent_role",
        actor=actor,
        telegram_id=telegram_id,
        role=role.value,
    )
    return created


async def remove_agent(
    session: AsyncSession, telegram_id: int, *, at: datetime, actor: str
) -> None:
    """Take a user off the allowlist; their past actions stay attributed to them."""
    agent = await active_agent(session, telegram_id)
    if agent is None:
        raise AgentNotFound(telegram_id)
    agent.removed_at = at
    audit.record(session, at=at, action="agent_remove", actor=actor, telegram_id=telegram_id)


async def active_agent(session: AsyncSession, telegram_id: int) -> Agent | None:
    """The allowlisted agent with this Telegram id (None for anyone else, or a removed agent)."""
    return await session.scalar(
        select(Agent).where(Agent.telegram_id == telegram_id, Agent.removed_at.is_(None))
    )
