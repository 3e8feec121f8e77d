"""Every table of the desk in one metadata: the core's, the money side's and each channel's.

The channels keep their own tables in their own stores (`bot/store.py`, `mail/store.py`) on the
core's declarative base; importing them here registers them, so Alembic, the migration check and
the tests see the whole schema.
"""

from __future__ import annotations

from sqlalchemy import MetaData

import accounts.tables  # noqa: F401 - registers the money side's tables
import bot.console_store
import bot.store  # noqa: F401 - registers agent_posts
import mail.store  # noqa: F401 - registers mail_cursors
from tickets.tables import Base

metadata: MetaData = Base.metadata
