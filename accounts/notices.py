"""Automatic notices of account actions to the customer, over their channel.

The notice itself is the core's (`tickets.customer_notices`): an outbox row written in the
caller's transaction, so a refund and the notice about it are committed together or not at all.
"""

from __future__ import annotations

from tickets.customer_notices import notify_customer

__all__ = ["notify_customer"]
