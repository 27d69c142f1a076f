"""Reducer tables: RocksDB (rocksdict) stores, one per reducer version and partition, each with a changelog topic.

A table value is::

    {"state": <the reducer's state>,
     "partition": <events-topic partition>, "offset": <offset> of the event that last changed it,
     "applied": {"<events-topic partition>": [offset, index in batch], ...}}

``applied`` marks, per source partition, the last event folded into the state; keeping it in the
same record as the state makes re-delivered events (at-least-once) harmless. A student's table
has one source partition; a class-scoped one may have several.

Every table is rebuildable from its changelog topic (``<prefix>-<reducer id>-v<version>-changelog``,
compacted, keyed by the JSON-encoded table key, partitioned like the events topic): a worker that
loses its local RocksDB files recovers the exact state on start (`lo_stream.tables.restore`). The
changelog topics are also the change feed (`lo_stream.tables.change_feed`).

The names and partitions derived from a reducer live here, once: its changelog, its repartition
topic, and the partition that holds a key.
"""

from __future__ import annotations

import orjson

from lo_stream.reducers import STUDENT, Reducer
from lo_stream.settings import Settings
from lo_stream.topics import TopicSpec, partition_of

__all__ = [
    "changelog_key",
    "changelog_spec",
    "changelog_topic",
    "encode_entry",
    "key_partition",
    "repartition_topic",
    "table_key",
]


def changelog_topic(settings: Settings, reducer: Reducer) -> str:
    """The compacted topic holding every change of a reducer's table."""
    return f"{settings.app_id}-{reducer.table_name}-changelog"


def changelog_spec(settings: Settings, reducer: Reducer) -> TopicSpec:
    """The changelog as `lo_stream.topics.ensure_topics` creates it before a worker starts."""
    return TopicSpec(changelog_topic(settings, reducer), settings.partitions, {"cleanup.policy": "compact"})


def repartition_topic(group: str, reducer: Reducer) -> str:
    """Where the events of a reducer not keyed by student are regrouped by its own key. Each
    consumer group (the workers', a build lane's) has its own."""
    return f"{group}-{reducer.table_name}-repartition"


def changelog_key(key: str) -> bytes:
    """A table key as its changelog record's key (JSON, as the change feed reads it).

    >>> changelog_key("s1"), table_key(b'"s1"')
    (b'"s1"', 's1')
    """
    return orjson.dumps(key)


def encode_entry(entry: dict) -> bytes:
    """A table value as stored and sent to the changelog (JSON), in a buffer of its own length.

    orjson (3.12 on) returns its text in the buffer it wrote it into, 4 KB or more however short
    the text; a worker keeps every entry changed since its last commit, and its stores the ones
    they wrote last (`lo_stream.tables.store`), so each is copied out. Raises as `orjson.dumps`.

    >>> value = encode_entry({"state": {"count": 1}})
    >>> value, len(value)
    (b'{"state":{"count":1}}', 21)
    """
    return bytes(memoryview(orjson.dumps(entry)))


def table_key(record_key: bytes) -> str:
    """A changelog record's key as the table key."""
    return orjson.loads(record_key)


def key_partition(settings: Settings, reducer: Reducer, key: str) -> int:
    """The partition holding a table key: the one its events come from. Student-scoped tables are
    partitioned like the events topic (by student), the others like their repartition topic (by
    the key), both with Kafka's default partitioner over the raw key.

    >>> s = Settings(partitions=4)
    >>> r = Reducer("m.per_doc", print, scope=("student", "doc_id"))
    >>> key_partition(s, r, '["ana","d1"]') == partition_of(s, "ana")
    True
    """
    partition_key = key
    if STUDENT in reducer.scope and len(reducer.scope) > 1:
        partition_key = orjson.loads(key)[reducer.scope.index(STUDENT)]
    return partition_of(settings, partition_key)
