"""Prometheus metrics of a worker, served at ``/metrics`` on its web port.

Per reducer: events applied, events it raised on, re-deliveries skipped; per worker: messages,
batch and commit times, failed commits, dead letters by reason, rebalances and restored records;
the consumer lag per partition (computed at scrape time); the process's memory and CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from lo_stream.agents.engine import Engine

__all__ = ["WorkerMetrics"]

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """The metrics of one worker, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.events = Counter(
            "lo_stream_reducer_events", "Events applied by each reducer.", ["reducer"], registry=self.registry
        )
        self.errors = Counter(
            "lo_stream_reducer_errors", "Events a reducer raised on (sent to the dead-letter topic).",
            ["reducer"], registry=self.registry,
        )
        self.dead_letters = Counter(
            "lo_stream_dead_letters", "Records the worker sent to the dead-letter topic.", ["reason"],
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "lo_stream_redelivered_events", "Events skipped because their table already held them.",
            ["reducer"], registry=self.registry,
        )
        self.messages = Counter("lo_stream_messages", "Kafka messages processed.", registry=self.registry)
        self.batch_seconds = Histogram(
            "lo_stream_batch_seconds", "Time to process one fetched batch.", buckets=SECONDS, registry=self.registry
        )
        self.commit_seconds = Histogram(
            "lo_stream_commit_seconds", "Time from a commit's start until its records are acknowledged and its "
            "offsets committed.", buckets=SECONDS, registry=self.registry,
        )
        self.commit_failures = Counter(
            "lo_stream_commit_failures", "Commits that failed (the worker went back to the last one).",
            registry=self.registry,
        )
        self.rebalances = Counter("lo_stream_rebalances", "Partition assignments received.", registry=self.registry)
        self.restored_records = Counter(
            "lo_stream_restored_records", "Changelog records applied to restore the stores.", registry=self.registry
        )

    def watch(self, engine: "Engine") -> None:
        """Report `engine`'s consumer lag."""
        self.registry.register(_ConsumerLag(engine))


class _ConsumerLag:
    """Messages not yet processed, per assigned partition: the partition's end (as last fetched)
    minus the next offset to process."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine

    def collect(self):
        lag = GaugeMetricFamily(
            "lo_stream_consumer_lag", "Messages in the partition not yet processed by this worker.",
            labels=["topic", "partition"],
        )
        consumer = self._engine.consumer
        for tp, position in dict(self._engine.positions).items():
            end = consumer.highwater(tp) if tp in consumer.assignment() else None
            if end is not None:
                lag.add_metric([tp.topic, str(tp.partition)], max(end - position, 0))
        yield lag
