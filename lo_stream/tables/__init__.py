"""RocksDB-backed Faust tables, one per reducer version, each with a changelog topic.

A table value is::

    {"state": <the reducer's state>,
     "partition": <events-topic partition>, "offset": <offset> of the event that last changed it,
     "applied": {"<events-topic partition>": [offset, index in batch], ...}}

``applied`` marks, per source partition, the last event folded into the state; keeping it in the
same record as the state makes re-delivered events (at-least-once) harmless. A student's table
has one source partition; a class-scoped one may have several.

Every table is rebuildable from its changelog topic (``<app id>-<reducer id>-v<version>-changelog``):
a worker that loses its local RocksDB files recovers the exact state on start. The changelog
topics are also the change feed (see `lo_stream.tables.change_feed`).
"""

from __future__ import annotations

import faust

from lo_stream.reducers import Reducer
from lo_stream.settings import Settings
from lo_stream.topics import TopicSpec

__all__ = ["changelog_spec", "changelog_topic", "reducer_table", "rocksdb_options"]

MB = 1024 * 1024


def reducer_table(app: faust.App, settings: Settings, reducer: Reducer) -> faust.Table:
    """Declare the table of one reducer version: keyed by str, in RocksDB (rocksdict),
    partitioned like the events topic. Missing keys read as None.

    Faust names a changelog after its app (``<app id>-<table>-changelog``); a build lane is
    another app (its own consumer group) that must write the very changelog the workers serve
    later, so it names the topic explicitly (and `lo-stream worker` creates it first)."""
    changelog = None
    if app.conf.id != settings.app_id:
        changelog = app.topic(
            changelog_topic(settings, reducer), partitions=settings.partitions, compacting=True, deleting=False,
            acks=False, internal=True, allow_empty=True,
        )
    return app.Table(
        reducer.table_name,
        default=None,
        key_type=str,
        partitions=settings.partitions,
        changelog_topic=changelog,
        options={"driver": "rocksdict", **rocksdb_options(settings)},
    )


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """The memory bounds of one table partition's RocksDB (Faust's `RocksDBOptions`). Faust's
    defaults allow 3 write buffers of 64 MB and a 2 GB block cache per table partition: stores
    for 5 tables on 4 partitions reached 1.4 GB after 6M writes, 0.6 GB with these bounds, at
    the same speed (`bench/table_memory.py`, docs/benchmarks.md). Two write buffers of a quarter
    each and a cache of half keep one under `settings.table_memory_mb`."""
    budget = settings.table_memory_mb * MB
    return {"write_buffer_size": budget // 4, "max_write_buffer_number": 2, "block_cache_size": budget // 2}


def changelog_topic(settings: Settings, reducer: Reducer) -> str:
    """The compacted topic holding every change of a reducer's table."""
    return f"{settings.app_id}-{reducer.table_name}-changelog"


def changelog_spec(settings: Settings, reducer: Reducer) -> TopicSpec:
    """The changelog as `lo_stream.topics.ensure_topics` creates it before a worker starts: a
    worker joining its group right after Faust created the topic could see it without partitions."""
    return TopicSpec(changelog_topic(settings, reducer), settings.partitions, {"cleanup.policy": "compact"})
