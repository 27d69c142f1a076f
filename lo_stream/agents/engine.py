"""The engine: consume event batches, run the reducers, write the tables, commit.

Responsibilities (one worker, one consumer group):

1. fetch large batches (``getmany``) of the events topic and of the repartition topics;
2. per partition, decode each message once and give each envelope, in order, to every reducer
   that wants it, under the key of its scope (a reducer kept per student takes each message as
   one run), folding the batch per key in memory
   (`lo_stream.tables.entries.fold`, shared with offline mode and time travel), in parts of
   about ``fold_max_events`` events of packed messages or ``fold_max_messages`` messages;
3. forward the events of reducers not keyed by student to their repartition topic, keyed by
   their own key, one record per key per part;
4. write each changed entry once per batch: staged in its table (readable at once) and one
   changelog record per key, produced in batches to the changelog partition of the source
   partition;
5. dead-letter, with the reason, a message that is not an envelope for its key and an event a
   reducer raised on (or whose state cannot be stored), and carry on with the others;
6. every ``commit_interval``: wait until Kafka has acknowledged every record the batches since the
   last commit caused, then commit their offsets (exactly-once: in each partition's transaction)
   and store the staged entries in RocksDB (`lo_stream.agents.outbox`). A commit that fails goes
   back to the last one: staged entries are dropped, the stores catch up with their changelogs,
   the partitions are read again from their committed offsets;
7. on a rebalance: commit before giving partitions up; restore the stores of the partitions
   assigned from their changelogs before any of their messages is processed; `restored` is set
   only while every held store is whole, and queries wait for it.

Reducers still see one event at a time, in order; they never see batches.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from lo_stream.agents.assignor import CoPartitionedAssignor
from lo_stream.agents.membership import leave_group
from lo_stream.agents.metrics import WorkerMetrics
from lo_stream.agents.outbox import DeliveryError, outbox_for
from lo_stream.dead_letters import dead_letter_record
from lo_stream.envelopes import MalformedEventError, decode_envelopes
from lo_stream.reducers import Reducer
from lo_stream.settings import Settings
from lo_stream.tables import changelog_key, encode_entry, repartition_topic
from lo_stream.tables.entries import Batch, Item, Run, fold, runs_of
from lo_stream.tables.restore import restore
from lo_stream.tables.store import Table
from lo_stream.topics import TopicSpec, ensure_topics, partition_of

__all__ = ["Engine"]

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.engine.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.engine.on_assigned(assigned)


class Engine:
    """The batch engine of one worker (see the module's docstring)."""

    def __init__(
        self, settings: Settings, reducers: Iterable[Reducer], metrics: WorkerMetrics, *,
        group: str, directory: Path, url: str,
    ) -> None:
        self.settings = settings
        self.reducers = list(reducers)
        self.metrics = metrics
        self.group = group
        self.events_topic = settings.topics.events
        self.tables = {reducer.id: Table(settings, reducer, directory) for reducer in self.reducers}
        self.regrouped = {repartition_topic(group, r): r for r in self.reducers if r.needs_repartition}
        self.assignor = CoPartitionedAssignor(settings.group_instance_id, url)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group,
            group_instance_id=settings.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Under exactly-once, forwarded events of aborted transactions must never be applied.
            isolation_level="read_committed" if settings.processing_guarantee == "exactly_once" else "read_uncommitted",
            partition_assignment_strategy=(self.assignor,),
            fetch_max_bytes=settings.fetch_max_bytes,
            max_partition_fetch_bytes=settings.fetch_partition_max_bytes,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(settings.session_timeout_ms // 5, 500),
        )
        self.outbox = outbox_for(settings, group, self.consumer)
        self.restored = asyncio.Event()
        self.held: set[int] = set()  # partition numbers whose stores are open and restored
        self.positions: dict[TopicPartition, int] = {}  # the next offset to process
        self.generation = 0  # bumped by every rebalance: a fetch across one is read again
        self._lock = asyncio.Lock()
        self._dirty: set[TopicPartition] = set()  # processed since the last commit
        self._changes: dict[tuple[str, int], dict[str, bytes]] = {}  # (reducer id, partition) -> key -> entry
        self._last_commit = time.monotonic()
        self._dead_letters: Counter[str] = Counter()  # since the last log line
        # Bound once: labels() per event would cost a lookup and a lock on the hot path.
        self._applied = {r.id: metrics.events.labels(r.id) for r in self.reducers}
        self._failed = {r.id: metrics.errors.labels(r.id) for r in self.reducers}
        self._redelivered = {r.id: metrics.redeliveries.labels(r.id) for r in self.reducers}
        metrics.watch(self)

    @property
    def topics(self) -> list[str]:
        return [self.events_topic, *self.regrouped]

    @property
    def owners(self) -> dict[int, str]:
        """The query URL of the worker holding each partition number, from the last assignment."""
        return self.assignor.owners

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.settings, [TopicSpec(t, self.settings.partitions) for t in self.regrouped])
        await self.outbox.start()
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        await self.consumer.start()
        logger.info("worker %s joined group %s (topics: %s)", self.settings.group_instance_id, self.group,
                    ", ".join(self.topics))

    async def run(self, stopping: asyncio.Event) -> None:
        """Process batches until `stopping` is set."""
        interval = self.settings.commit_interval
        while not stopping.is_set():
            generation = self.generation
            fetched = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self.settings.batch_max_records)
            async with self._lock:
                if generation != self.generation:
                    await self._read_again(fetched)
                    continue
                batch = {tp: records for tp, records in fetched.items() if records and tp.partition in self.held}
                if batch:
                    with _collector_paused():
                        await self._process(batch)
                if self._dirty and (not batch or time.monotonic() - self._last_commit >= interval):
                    await self._commit_or_rewind()

    async def stop(self) -> None:
        """Commit what was processed, then leave the group so that the others take over at once."""
        async with self._lock:
            if self._dirty:
                await self._commit_or_rewind(final=True)
            self.restored.clear()
        await self.consumer.stop()
        await leave_group(self.settings, self.group, self.settings.group_instance_id)
        await self.outbox.stop()
        for table in self.tables.values():
            table.close_all()
        logger.info("worker %s stopped", self.settings.group_instance_id)

    # -- rebalances --------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.restored.clear()
        async with self._lock:
            self.generation += 1
            if self._dirty:
                await self._commit_or_rewind()

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.restored.clear()
        async with self._lock:
            self.generation += 1
            numbers = {tp.partition for tp in assigned}
            gone = self.held - numbers
            for table in self.tables.values():
                for partition in gone:
                    table.close(partition)
            await self.outbox.revoke(gone)
            await self.outbox.assign(numbers)
            started = time.monotonic()
            applied = await restore(self.settings, self.tables.values(), numbers)
            self.metrics.restored_records.inc(applied)
            self.held = numbers
            self.positions = await self._committed(assigned)
            self._dirty.clear()
            self.metrics.rebalances.inc()
            logger.info("assigned partitions %s of %s (%d changelog records restored in %.1f s)",
                        _ranges(numbers), self.events_topic, applied, time.monotonic() - started)
            self.restored.set()

    async def _committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where each partition is read from: its committed offset, or its first."""
        partitions = list(partitions)
        positions = {tp: await self.consumer.committed(tp) for tp in partitions}
        missing = [tp for tp, offset in positions.items() if offset is None]
        if missing:
            positions.update(await self.consumer.beginning_offsets(missing))
        return positions

    async def _read_again(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Records fetched across a rebalance: read them again from the committed offsets."""
        for tp, offset in (await self._committed(tp for tp in fetched if tp.partition in self.held)).items():
            self.consumer.seek(tp, offset)

    # -- a batch -----------------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = time.perf_counter()
        messages = 0
        for tp, records in batch.items():
            if tp.topic == self.events_topic:
                await self._reduce_events(tp, records)
            else:
                await self._reduce_regrouped(self.regrouped[tp.topic], tp, records)
            self.positions[tp] = records[-1].offset + 1
            self._dirty.add(tp)
            messages += len(records)
        for (reducer_id, partition), changes in self._changes.items():
            table = self.tables[reducer_id]
            await self.outbox.send(
                partition, table.changelog, partition, [(changelog_key(key), value) for key, value in changes.items()]
            )
        self._changes = {}
        self.metrics.messages.inc(messages)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _reduce_events(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Decode a partition's messages and reduce them in parts: a part ends with the message that
        brings it to `fold_max_events` events of messages of several events (a part's objects are
        made, folded and freed while they are still in the CPU's caches), or to `fold_max_messages`
        messages (a student's events sent one per message meet in one part, and each key's entry
        is read and written once for all of them)."""
        limit, most = self.settings.fold_max_events, self.settings.fold_max_messages
        part: list[tuple[int, str, list[dict]]] = []
        events = first = 0
        for place, record in enumerate(records):
            try:
                key = _text_key(record.key)
                envelopes = decode_envelopes(record.value, key)
            except MalformedEventError as exc:
                await self._dead_letter(tp.partition, f"malformed event: {exc}", record.value, topic=tp.topic,
                                        partition=tp.partition, offset=record.offset, key=_printable_key(record.key))
                continue
            part.append((record.offset, key, envelopes))
            if len(envelopes) > 1:
                events += len(envelopes)
            if events >= limit or len(part) >= most:
                await self._reduce_part(tp, part, records[first:place + 1])
                part, events, first = [], 0, place + 1
        if part:
            await self._reduce_part(tp, part, records[first:])

    async def _reduce_part(self, tp: TopicPartition, decoded: list[tuple[int, str, list[dict]]],
                           records: list[ConsumerRecord]) -> None:
        raw = {record.offset: record.value for record in records}
        batch = Batch(tp.partition, decoded)
        for reducer in self.reducers:
            if reducer.needs_repartition:
                items = batch.items(reducer)
                if items:
                    await self._forward(reducer, tp, items, raw)
            else:
                runs = batch.runs(reducer)
                if runs:
                    await self._apply(reducer, tp, runs, raw)

    async def _reduce_regrouped(self, reducer: Reducer, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Apply forwarded items (`_forward`), each as a run of its own."""
        runs: list[Run] = []
        raw: dict[int, bytes] = {}
        for record in records:
            for item in orjson.loads(record.value):
                runs.append(Run(item["key"], [item["envelope"]], item["partition"], item["offset"], (item["index"],)))
                raw[item["offset"]] = record.value
        await self._apply(reducer, tp, runs, raw)

    async def _forward(self, reducer: Reducer, tp: TopicPartition, items: list[Item], raw: dict[int, bytes]) -> None:
        """Send a reducer's items to its repartition topic, one record per key, by the key's partition."""
        by_partition: dict[int, dict[str, list[Item]]] = {}
        for item in items:
            by_partition.setdefault(partition_of(self.settings, item.key), {}).setdefault(item.key, []).append(item)
        topic = repartition_topic(self.group, reducer)
        for target, by_key in by_partition.items():
            records = []
            for key, key_items in by_key.items():
                try:
                    records.append((key.encode(), orjson.dumps([item._asdict() for item in key_items])))
                except orjson.JSONEncodeError:  # one event no encoder writes back: forward the others
                    records.append((key.encode(), await self._forwardable(reducer, tp, key_items, raw)))
            await self.outbox.send(tp.partition, topic, target, records)

    async def _forwardable(self, reducer: Reducer, tp: TopicPartition, items: list[Item], raw: dict[int, bytes]) -> bytes:
        """The items of one key as a repartition record, dead-lettering each that cannot be encoded."""
        encoded = []
        for item in items:
            try:
                encoded.append(orjson.dumps(item._asdict()))
            except orjson.JSONEncodeError as exc:
                await self._dead_letter(tp.partition, "event cannot be forwarded", raw[item.offset], topic=tp.topic,
                                        partition=tp.partition, offset=item.offset, reducer=reducer.id, error=str(exc))
        return b"[" + b",".join(encoded) + b"]"

    async def _apply(self, reducer: Reducer, tp: TopicPartition, runs: list[Run], raw: dict[int, bytes]) -> None:
        """Fold a batch's runs into a reducer's table partition and stage the changed entries."""
        table = self.tables[reducer.id]
        partition = tp.partition
        folded = await fold(reducer, runs, table.reader(partition))
        self._applied[reducer.id].inc(folded.applied)
        self._redelivered[reducer.id].inc(folded.redelivered)
        for failure in folded.failures:
            self._failed[reducer.id].inc()
            await self._dead_letter(
                partition, "reducer raised", failure.item.envelope, fallback=raw.get(failure.item.offset),
                topic=self.events_topic, partition=int(failure.item.partition), offset=failure.item.offset,
                key=failure.item.key, reducer=reducer.id, version=reducer.version, error=failure.error,
            )
        values: dict[str, bytes] = {}
        for key, entry in folded.changed.items():
            try:
                values[key] = encode_entry(entry)
            except (TypeError, orjson.JSONEncodeError):
                items = [item for run in runs if run.key == key for item in run.items()]
                value = await self._apply_one_by_one(reducer, tp, items, raw)
                if value is not None:
                    values[key] = value
        table.stage(partition, values)
        self._changes.setdefault((reducer.id, partition), {}).update(values)

    async def _apply_one_by_one(self, reducer: Reducer, tp: TopicPartition, items: list[Item],
                                raw: dict[int, bytes]) -> bytes | None:
        """A key whose folded state cannot be stored (not JSON): fold its items again one at a time
        and dead-letter each event after which it cannot be; return the last storable entry."""
        table = self.tables[reducer.id]
        stored = None
        current = table.entry(tp.partition, items[0].key)
        for item in items:
            folded = await fold(reducer, runs_of([item]), lambda _key: None if current is None else orjson.loads(orjson.dumps(current)))
            entry = folded.changed.get(item.key)
            if entry is None:  # raised (dead-lettered already) or re-delivered
                continue
            try:
                stored = encode_entry(entry)
            except (TypeError, orjson.JSONEncodeError) as exc:
                self._failed[reducer.id].inc()
                await self._dead_letter(tp.partition, "reducer state cannot be stored", item.envelope,
                                        fallback=raw.get(item.offset), topic=self.events_topic,
                                        partition=int(item.partition), offset=item.offset, key=item.key,
                                        reducer=reducer.id, version=reducer.version, error=f"{type(exc).__name__}: {exc}")
                continue
            current = entry
        return stored

    async def _dead_letter(self, source: int, reason: str, raw: Any, *, fallback: bytes | None = None,
                           **context: Any) -> None:
        try:
            value = dead_letter_record(reason, raw, stage="worker", **context)
        except (TypeError, orjson.JSONEncodeError):  # e.g. nested deeper than JSON encoders go: keep the bytes
            value = dead_letter_record(reason, fallback, stage="worker", **context)
        self.metrics.dead_letters.labels(reason.split(":")[0]).inc()
        self._dead_letters[reason.split(":")[0]] += 1
        key = context.get("key")
        await self.outbox.send(source, self.settings.topics.dead_letters, 0,
                               [(str(key).encode() if key is not None else None, value)])

    # -- commits -----------------------------------------------------------------------------

    async def _commit_or_rewind(self, *, final: bool = False) -> None:
        started = time.perf_counter()
        try:
            offsets = {tp: self.positions[tp] for tp in self._dirty}
            written = await self.outbox.commit(offsets)
        except (DeliveryError, KafkaError) as exc:
            self.metrics.commit_failures.inc()
            if final:
                logger.error("the last commit failed (%s): the next worker processes those events again", exc)
                return
            logger.error("commit failed (%s): going back to the last commit", exc)
            await self._rewind()
            return
        for table in self.tables.values():
            table.flush({p: offset for (topic, p), offset in written.items() if topic == table.changelog})
        self._dirty.clear()
        self._last_commit = time.monotonic()
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        if self._dead_letters:
            logger.warning("dead letters since the last report: %s", dict(self._dead_letters))
            self._dead_letters.clear()

    async def _rewind(self) -> None:
        """Back to the last commit: drop what was staged, catch the stores up with their
        changelogs (which may hold records of the failed commit: applying them is exact, the
        `applied` marks skip their events), and read from the committed offsets again."""
        await self.outbox.abort()
        for table in self.tables.values():
            table.discard_pending()
        self._changes = {}
        await restore(self.settings, self.tables.values(), self.held)
        assigned = [tp for tp in self.consumer.assignment() if tp.partition in self.held]
        self.positions = await self._committed(assigned)
        for tp, offset in self.positions.items():
            self.consumer.seek(tp, offset)
        self._dirty.clear()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the length of a batch.

    A batch's objects (decoded envelopes, items, states) live until its end, then go at once by
    reference counting; meanwhile the collector, started by every few hundred allocations, would
    walk all of them again and again: a third of the worker's CPU on packed messages (see
    docs/engine.md). Cycles a reducer makes are collected as usual once the batch is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _text_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEventError("its key is not UTF-8 text: key events by metadata.auth.safe_user_id") from None


def _printable_key(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", errors="replace")


def _ranges(numbers: set[int]) -> str:
    """Partition numbers as Kafka tools print them.

    >>> _ranges({0, 1, 2, 5}), _ranges(set())
    ('0-2,5', 'none')
    """
    parts, run = [], []
    for n in sorted(numbers):
        if run and n != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(n)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts) or "none"
