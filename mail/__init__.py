"""The email channel: parsing, IMAP intake, SMTP answers, and local servers for the demo."""
