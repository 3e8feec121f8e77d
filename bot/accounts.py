"""Account commands in Telegram: a customer's `/link` and `/balance`, an agent's `/balance`.

The chat classes (`bot.customers`, `bot.agents`) hand these commands here; this module turns
them into calls of `accounts.linking` and `accounts.lookups` and renders the answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts.account_claims import AccountClaims
from accounts.linking import CODE_TTL, Linker, LinkOutcome, LinkResult, is_code
from accounts.lookups import BalanceLookups, parse_target
from tickets.errors import SupportbotError
from tickets.ports import Renderer


@dataclass(frozen=True)
class AccountServices:
    """What the bot needs for account commands."""

    linker: Linker
    lookups: BalanceLookups
    templates: Renderer
    claims: AccountClaims | None = None  # an agent's /account N EMAIL|CODE

    async def link(self, telegram_id: int, name: str, args: str, locale: str | None = None) -> str:
        """`/link EMAIL` asks for a code, `/link CODE` proves it; `/link` alone explains."""
        words = args.split()
        if len(words) != 1:
            return self._link_text(LinkOutcome(LinkResult.NO_CODE), locale, usage=True)
        if is_code(words[0]):
            outcome = await self.linker.confirm(telegram_id, name, words[0])
        else:
            outcome = await self.linker.request(telegram_id, name, words[0])
        return self._link_text(outcome, locale)

    def _link_text(self, outcome: LinkOutcome, locale: str | None, *, usage: bool = False) -> str:
        return self.templates.render(
            "telegram/link",
            locale=locale,
            result="usage" if usage else outcome.result.value,
            email=outcome.email or "",
            attempts_left=outcome.attempts_left,
            retry_at=outcome.retry_at,
            minutes=int(CODE_TTL.total_seconds() // 60),
        )

    async def customer_balance(self, telegram_id: int, locale: str | None = None) -> str:
        """A customer's `/balance`: their linked account, or how to link one."""
        return await self.lookups.for_customer(telegram_id, locale)

    async def agent_balance(self, agent: int, args: str, context_ticket: int | None) -> str:
        """An agent's `/balance [N|EMAIL]` (plain text; the caller escapes it for HTML)."""
        return await self.lookups.for_agent(agent, parse_target(args, context_ticket))

    async def agent_account(self, agent: int, args: str, context_ticket: int | None) -> str:
        """An agent's `/account [N] EMAIL|CODE` (plain text; the caller escapes it for HTML)."""
        if self.claims is None:
            raise SupportbotError("/account is not available here")
        return await self.claims.command(agent, args, context_ticket)
