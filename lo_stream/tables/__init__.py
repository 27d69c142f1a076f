"""RocksDB-backed Faust tables, one per piece of per-key state, each with a changelog topic.

Every table here is rebuildable from its changelog topic (``<app id>-<table>-changelog``):
a worker that loses its local RocksDB files recovers the exact state on start.
"""

from __future__ import annotations

from typing import Any, Callable

import faust

from lo_stream.settings import Settings

__all__ = ["rocksdb_table"]


def rocksdb_table(app: faust.App, settings: Settings, name: str, *, default: Callable[[], Any]) -> faust.Table:
    """Declare a table keyed by str, stored in RocksDB (through rocksdict), partitioned like the events topic.

    >>> counts = rocksdb_table(app, settings, "event_counts", default=int)  # doctest: +SKIP
    """
    return app.Table(
        name,
        default=default,
        key_type=str,
        partitions=settings.partitions,
        options={"driver": "rocksdict"},
    )
