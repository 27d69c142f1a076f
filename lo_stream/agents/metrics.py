"""Prometheus metrics of a worker, served at ``/metrics`` on its web port.

lo_stream's own series (per reducer) sit beside Faust's (``faust_*``: messages, table operations,
rebalances and recoveries in progress, end and committed offsets per partition), plus the
consumer lag per partition and the process's memory and CPU.
"""

from __future__ import annotations

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry, Counter, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """The metrics of one worker app, in a registry of its own."""

    def __init__(self, app: faust.App) -> None:
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
        setup_prometheus_sensors(app, registry=self.registry, name_prefix="faust")
        self.registry.register(_ConsumerLag(app))


class _ConsumerLag:
    """Messages not yet read, per assigned partition, from Faust's monitor at scrape time."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    def collect(self):
        lag = GaugeMetricFamily(
            "lo_stream_consumer_lag", "Messages in the partition not yet read by this worker.",
            labels=["topic", "partition"],
        )
        monitor = self._app.monitor
        for tp, end in dict(monitor.tp_end_offsets or {}).items():
            read = (monitor.tp_read_offsets or {}).get(tp, -1)
            lag.add_metric([tp.topic, str(tp.partition)], max(end - read - 1, 0))
        yield lag
