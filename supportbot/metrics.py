"""Prometheus metrics: this process's counters, and the desk's figures read at scrape time.

Only the shell imports `prometheus_client`. The core and the channels report through the
`Events` port (`tickets/ports.py`); `PrometheusEvents` turns those into counters and gauges of
its own registry (never the library's global one, so two services in one process, as in the
tests, do not collide). The queue's and the outbox's figures come from the database when
`/metrics` is asked (`tickets/vitals.py`), so every replica reports the same truth for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tickets.outbox import (
    Delivered,
    Failed,
    OutboxItem,
    Outcome,
    Report,
    RetryLater,
    Sender,
)
from tickets.ports import (
    DELIVERED,
    DELIVERY_FAILED,
    IMAP_CONNECTED,
    IMAP_LAG,
    INTAKE,
    TELEGRAM_429,
)
from tickets.vitals import Vitals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DeskFigures(Collector):
    """The latest `Vitals` and replica roles, as metric families (set before each scrape)."""

    def __init__(self) -> None:
        self.vitals: Vitals | None = None
        self.roles: Mapping[str, str] = {}
        self.database_up = True

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "supportbot_database_up", "1 when the database answered this scrape's queries"
        )
        up.add_metric([], 1.0 if self.database_up else 0.0)
        yield up
        leader = GaugeMetricFamily(
            "supportbot_leader",
            "1 when this replica holds the role (leader), 0 when another one does (follower)",
            labels=["role"],
        )
        for role, state in sorted(self.roles.items()):
            leader.add_metric([role], 1.0 if state == "leader" else 0.0)
        yield leader
        vitals = self.vitals
        if vitals is None:
            return
        waiting = GaugeMetricFamily(
            "supportbot_tickets_waiting",
            "Tickets waiting on an answer from us, by plan and urgency",
            labels=["plan", "urgency"],
        )
        for (plan, urgency), count in sorted(vitals.waiting.items()):
            waiting.add_metric([plan, urgency], float(count))
        yield waiting
        oldest = GaugeMetricFamily(
            "supportbot_oldest_wait_business_hours",
            "Business hours the longest-waiting customer has waited (0 when nobody waits)",
        )
        oldest.add_metric([], vitals.oldest_wait_hours)
        yield oldest
        breaches = CounterMetricFamily(
            "supportbot_sla_breaches",
            "Waits that went past their SLA due time (breach alerts given, all replicas)",
        )
        breaches.add_metric([], float(vitals.breaches_total))
        yield breaches
        depth = GaugeMetricFamily(
            "supportbot_outbox_depth", "Outbox rows not delivered yet, by route", labels=["route"]
        )
        age = GaugeMetricFamily(
            "supportbot_outbox_oldest_age_seconds",
            "Age of the oldest outbox row not delivered yet, by route",
            labels=["route"],
        )
        for route, backlog in sorted(vitals.backlog.items()):
            depth.add_metric([route], float(backlog.depth))
            age.add_metric([route], backlog.oldest_seconds)
        yield depth
        yield age


class PrometheusEvents:
    """The `Events` port on a registry of this process's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.figures = DeskFigures()
        self.registry.register(self.figures)
        r = self.registry
        self._counters: dict[str, Counter] = {
            INTAKE: Counter(
                "supportbot_intake",
                "Customer messages taken in (duplicates left out), by channel",
                ["channel"],
                registry=r,
            ),
            DELIVERED: Counter(
                "supportbot_deliveries", "Outbox rows delivered, by route", ["route"], registry=r
            ),
            DELIVERY_FAILED: Counter(
                "supportbot_delivery_failures",
                "Delivery attempts that failed, by route and whether it is tried again",
                ["route", "outcome"],
                registry=r,
            ),
            TELEGRAM_429: Counter(
                "supportbot_telegram_429",
                "429 Too Many Requests answers received from the Bot API",
                registry=r,
            ),
        }
        self._gauges: dict[str, Gauge] = {
            IMAP_LAG: Gauge(
                "supportbot_imap_lag_seconds",
                "From the arrival in the mailbox of the oldest mail of the latest batch to its "
                "ticket",
                registry=r,
            ),
            IMAP_CONNECTED: Gauge(
                "supportbot_imap_connected",
                "1 while this process's IMAP reader holds a connection to the mailbox",
                registry=r,
            ),
        }
        # Families that exist from the start read 0, not "absent", before the first event.
        self._counters[TELEGRAM_429].inc(0)

    def count(self, event: str, /, amount: float = 1.0, **labels: str) -> None:
        counter = self._counters[event]
        (counter.labels(**labels) if labels else counter).inc(amount)

    def measure(self, reading: str, value: float, /, **labels: str) -> None:
        gauge = self._gauges[reading]
        (gauge.labels(**labels) if labels else gauge).set(value)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class CountingSender:
    """A sender whose outcomes are counted (deliveries, failures) on their way to the worker."""

    def __init__(self, sender: Sender, events: PrometheusEvents) -> None:
        self._sender = sender
        self._events = events

    async def deliver(self, items: Sequence[OutboxItem], report: Report) -> None:
        await self._sender.deliver(items, _CountingReport(report, self._events))

    def __getattr__(self, name: str) -> Any:  # close() and the like reach the wrapped sender
        return getattr(self._sender, name)


class _CountingReport:
    def __init__(self, report: Report, events: PrometheusEvents) -> None:
        self._report = report
        self._events = events

    def outcome(self, item: OutboxItem, outcome: Outcome) -> None:
        route = item.route.value
        if isinstance(outcome, Delivered):
            self._events.count(DELIVERED, route=route)
        elif isinstance(outcome, Failed):
            self._events.count(DELIVERY_FAILED, route=route, outcome="given_up")
        elif isinstance(outcome, RetryLater):
            self._events.count(DELIVERY_FAILED, route=route, outcome="retried")
        self._report.outcome(item, outcome)

    async def progress(self, item: OutboxItem, state: Mapping[str, Any]) -> None:
        await self._report.progress(item, state)
