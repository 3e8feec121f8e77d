"""The ticket core: one queue for every channel, the business-hours SLA and the outbox."""
