"""Telegram-side tooling for supportbot, including a local Bot API server for tests and demos."""
