"""Restore: bring a worker's stores up to their changelogs before any event of theirs is processed.

For each table partition a worker is assigned, read its changelog partition from the record after
the store's checkpoint to the end (the last stable offset: under exactly-once, records of open or
aborted transactions are never applied), in write batches, applying tombstones as deletes. A store
whose checkpoint lies beyond the changelog's end was built from a changelog that has since been
deleted and recreated (`lo-stream replay`, a dropped version): it is wiped and rebuilt.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from lo_stream.settings import Settings
from lo_stream.tables import table_key
from lo_stream.tables.store import Table

__all__ = ["restore"]

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 500
PROGRESS_EVERY_S = 5.0


async def restore(settings: Settings, tables: Iterable[Table], partitions: Iterable[int]) -> int:
    """Restore the stores of `partitions` of every table (opening them); return the records applied."""
    wanted: dict[TopicPartition, tuple[Table, int]] = {
        TopicPartition(table.changelog, partition): (table, partition) for table in tables for partition in partitions
    }
    if not wanted:
        return 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=settings.fetch_partition_max_bytes,
        fetch_max_bytes=settings.fetch_max_bytes,
    )
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        ends = await consumer.end_offsets(list(wanted))
        remaining: set[TopicPartition] = set()
        for tp, (table, partition) in wanted.items():
            store = table.open(partition)
            start = 0 if store.checkpoint is None else store.checkpoint + 1
            if start > ends[tp]:
                logger.warning("%s[%d]: the store is ahead of its changelog (rebuilt since?): rebuilding it",
                               tp.topic, partition)
                store.wipe()
                start = 0
            if start < ends[tp]:
                consumer.seek(tp, start)
                remaining.add(tp)
        total = sum(ends[tp] for tp in remaining)
        if remaining:
            logger.info("restoring %d table partition(s) from their changelogs", len(remaining))
        applied, started, reported = 0, time.monotonic(), time.monotonic()
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=FETCH_TIMEOUT_MS)
            for tp, records in fetched.items():
                table, partition = wanted[tp]
                store = table.stores[partition]
                last = records[-1].offset if records else None
                store.write({table_key(r.key): r.value for r in records if r.key is not None}, last)
                applied += len(records)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if remaining and time.monotonic() - reported > PROGRESS_EVERY_S:
                reported = time.monotonic()
                logger.info("restoring: %d changelog records applied (offsets up to %d in all)", applied, total)
        if applied:
            logger.info("restored %d changelog records in %.1f s", applied, time.monotonic() - started)
        return applied
    finally:
        await consumer.stop()
