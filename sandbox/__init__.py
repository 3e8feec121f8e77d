"""Local stand-ins for Telegram and mail, for the demo, the tests and the benchmarks.

A local Bot API server (`telegram/`), an IMAP server and SMTP sink (`imap/`, `mail.py`), the real
service run against them (`service.py`) and the scripted demo. No product module imports this
package: it is its own composition root, and `supportbot demo` finds it through the
`supportbot.commands` entry point.
"""
