"""Inbound email: turn raw RFC 5322 bytes into what the support desk needs (see mail.parse)."""
