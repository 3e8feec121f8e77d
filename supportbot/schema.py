"""Every table of the desk in one metadata: the core's, the money side's and each channel's.

The channels keep their own tables in their own stores (`bot/store.py`, `mail/store.py`) on the
core's declarative base; importing them here registers them, so Alembic, the migration check and
the tests see the whole schema.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

import accounts.tables  # noqa: F401 - registers the money side's tables
import bot.console_store
import bot.store  # noqa: F401 - registers agent_posts
import mail.store  # noqa: F401 - registers mail_cursors
from tickets.search import is_search_object
from tickets.tables import Base

metadata: MetaData = Base.metadata


def models_only(
    _object: Any, name: str | None, _type: str, _reflected: bool, _compare_to: Any
) -> bool:
    """Alembic's filter: the full-text structures of migration 0013 are not in the models."""
    return not is_search_object(name)
