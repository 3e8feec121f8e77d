"""One exception root for everything the desk refuses or fails at on purpose."""

from __future__ import annotations


class SupportbotError(Exception):
    """Root of every error supportbot raises deliberately; its message is fit to show a user."""


class NotFound(SupportbotError):
    """Something named by the caller does not exist."""


class TicketNotFound(NotFound):
    def __init__(self, number: int) -> None:
        super().__init__(f"there is no ticket #{number}")
        self.number = number


class AgentNotFound(NotFound):
    def __init__(self, telegram_id: int) -> None:
        super().__init__(f"{telegram_id} is not an agent")
        self.telegram_id = telegram_id


class NotAllowed(SupportbotError):
    """The caller may not do this (not an agent, not an admin, not the claimer)."""


class InvalidAction(SupportbotError):
    """The action makes no sense in the ticket's current state."""
