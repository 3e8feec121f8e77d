"""The email channel: IMAP intake and its cursor, parsing, and answers over SMTP."""
