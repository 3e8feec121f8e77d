"""The Telegram channel: the bot for customers and the agents' group, senders, limits, store."""
