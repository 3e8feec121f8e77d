"""One part against a real peer: the database, Dovecot, aiosmtpd, the local Bot API, the
billing server, or one CLI command."""
