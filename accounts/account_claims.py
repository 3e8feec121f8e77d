"""An agent ties a ticket to an account when the customer writes from another address.

"Email us with your account email" does not always happen: the customer writes from a work
address, or from Telegram. `/account N EMAIL` ties ticket N's customer to the account with that
address *as not verified* (the plan follows at once; money still needs `/refund N verified`) and
mails a one-time code to the account's address, with the same limits and lifetime as `/link`.
When the customer gives the code back in the ticket, the agent sends `/account N CODE` (or the
customer sends `/link CODE` to the bot on Telegram) and the tie is proven: the customer counts
as linked from then on. Every step is audited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.billing import Billing
from accounts.ledger import normalise_email
from accounts.linking import (
    MAX_ATTEMPTS,
    CodeState,
    Linker,
    LinkResult,
    account_for,
    is_address,
    is_code,
    judge,
    link,
    pending_code,
)
from accounts.plans import sync_plans
from accounts.tables import Account, AccountLink
from tickets import audit
from tickets.agents import active_agent
from tickets.errors import AgentNotFound, InvalidAction, NotFound, SupportbotError
from tickets.ports import Clock, Renderer, utcnow
from tickets.tables import Agent, Ticket

USAGE = "use /account N EMAIL to tie ticket N to an account, then /account N CODE"


class AccountClaims:
    """`/account N EMAIL` and `/account N CODE`, each one transaction, audited."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        linker: Linker,
        billing: Billing,
        templates: Renderer,
        *,
        clock: Clock = utcnow,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._linker = linker
        self._billing = billing
        self._templates = templates
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)

    async def command(self, agent: int, args: str, context_ticket: int | None) -> str:
        """`/account [N] EMAIL` or `/account [N] CODE`; a refusal is raised, an answer returned."""
        words = args.split()
        if len(words) == 2 and words[0].removeprefix("#").isdigit():
            number: int | None = int(words[0].removeprefix("#"))
        elif len(words) == 1:
            number = context_ticket
        else:
            number = None
        if number is None:
            async with self._refusals(agent, 0, None):
                raise InvalidAction(USAGE)
        if is_code(words[-1]):
            return await self.confirm(number, agent, words[-1])
        return await self.request(number, agent, words[-1])

    async def request(self, number: int, agent_telegram_id: int, address: str) -> str:
        """Tie the ticket's customer to the account, unverified, and mail the account a code."""
        now = self._clock()
        email = normalise_email(address)
        async with self._refusals(agent_telegram_id, number, email):
            if not is_address(email):
                raise InvalidAction(f"{address!r} is not an email address; {USAGE}")
            if not self._linker.can_mail:
                raise InvalidAction("codes go by email, and SMTP_HOST or SUPPORT_ADDRESS is unset")
            async with self._sessions() as session:
                await _agent_and_ticket(session, agent_telegram_id, number)
            summary = await self._billing.lookup(email, now)
            if summary is None:
                raise NotFound(f"no account has the address {email}")
            async with self._sessions.begin() as session:
                agent, ticket = await _agent_and_ticket(session, agent_telegram_id, number)
                customer_id = ticket.customer_id
                earlier = (
                    await session.execute(
                        select(AccountLink.method, Account.email)
                        .join(Account, Account.id == AccountLink.account_id)
                        .where(AccountLink.customer_id == customer_id)
                    )
                ).first()
                if earlier is not None and earlier.method == "code":
                    if earlier.email == email:
                        return f"#{number} is already tied to {email}, proven by a code."
                    raise InvalidAction(
                        f"#{number}'s customer proved they own {earlier.email}; they can /link "
                        "another account themselves"
                    )
                account_id = await account_for(session, email, summary.plan, now)
                await link(session, customer_id, account_id, now, method="agent")
                issued = await self._linker.issue_code(session, customer_id, email, now, number)
                if isinstance(issued, datetime):
                    raise InvalidAction(
                        f"too many codes were asked for {email} lately; try again after "
                        f"{issued:%H:%M} UTC"
                    )
                await self._tied(session, agent, number, customer_id, email, now, verified=False)
        self._wakeup()
        return (
            f"📨 A code went to {email}. #{number} is tied to that account, NOT verified until "
            f"the customer gives the code back: then send /account {number} CODE (or they send "
            f"/link CODE to the bot on Telegram). Until then, money needs /refund {number} "
            "verified."
        )

    async def confirm(self, number: int, agent_telegram_id: int, code: str) -> str:
        """The code the customer gave back: the right one proves the tie."""
        now = self._clock()
        async with (
            self._refusals(agent_telegram_id, number, None),
            self._sessions.begin() as session,
        ):
            agent, ticket = await _agent_and_ticket(session, agent_telegram_id, number)
            customer_id = ticket.customer_id
            row = await pending_code(session, customer_id)
            if row is None:
                raise InvalidAction(f"no code is waiting for #{number}: /account N EMAIL first")
            given = self._linker.code_hash_of(customer_id, row.email, code)
            verdict = judge(CodeState(row.expires_at, row.attempts, row.code_hash), given, now)
            if verdict is not LinkResult.LINKED:
                if verdict is LinkResult.WRONG_CODE:
                    row.attempts += 1
                left = MAX_ATTEMPTS - row.attempts
                audit.record(
                    session, at=now, action="refused:account_tie", agent=agent,
                    ticket_id=number, reason=verdict.value, attempts_left=left,
                )  # fmt: skip
                return _refusal(verdict, left, number)
            row.used_at = now
            account_id = await account_for(session, row.email, None, now)
            await link(session, customer_id, account_id, now, method="code")
            await self._tied(session, agent, number, customer_id, row.email, now, verified=True)
            email = row.email
        self._wakeup()
        return f"✅ #{number} is tied to {email}: the customer gave the code back (verified)."

    async def _tied(
        self,
        session: AsyncSession,
        agent: Agent,
        number: int,
        customer_id: int,
        email: str,
        now: datetime,
        *,
        verified: bool,
    ) -> None:
        """Audit a tie and let the customer's plan follow the account."""
        audit.record(
            session,
            at=now,
            action="account_tie",
            agent=agent,
            ticket_id=number,
            email=email,
            verified=verified,
        )
        reason = f"proven to own {email}" if verified else f"tied to {email} by an agent"
        await sync_plans(
            session,
            self._templates,
            at=now,
            reason=reason,
            customers=[customer_id],
            actor=f"agent:{agent.telegram_id}",
        )

    @asynccontextmanager
    async def _refusals(self, agent: int, number: int, email: str | None) -> AsyncIterator[None]:
        """Audit a refusal leaving the block (in its own transaction), then let it go on."""
        try:
            yield
        except SupportbotError as error:
            async with self._sessions.begin() as session:
                exists = await session.get(Ticket, number) is not None
                audit.record(
                    session,
                    at=self._clock(),
                    action="refused:account_tie",
                    actor=f"telegram:{agent}",
                    ticket_id=number if exists else None,
                    email=email,
                    reason=str(error)[:500],
                )
            raise


async def _agent_and_ticket(
    session: AsyncSession, telegram_id: int, number: int
) -> tuple[Agent, Ticket]:
    agent = await active_agent(session, telegram_id)
    if agent is None:
        raise AgentNotFound(telegram_id)
    ticket = await session.get(Ticket, number)
    if ticket is None:
        raise NotFound(f"there is no ticket #{number}")
    return agent, ticket


def _refusal(verdict: LinkResult, left: int, number: int) -> str:
    if verdict is LinkResult.WRONG_CODE:
        return f"⚠️ That is not the code for #{number}; {left} attempt(s) left."
    if verdict is LinkResult.EXPIRED:
        return f"⚠️ The code for #{number} has expired: send /account {number} EMAIL again."
    return f"⚠️ No attempts are left for this code: send /account {number} EMAIL again."
