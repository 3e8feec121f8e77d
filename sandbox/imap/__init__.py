"""The local IMAP server: the support mailbox of the demo and of tests without Dovecot."""
