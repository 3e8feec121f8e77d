"""Accounts: the ledger, balances, identity links, refunds, payouts and SLA credits."""
