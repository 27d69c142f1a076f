"""Replay: rebuild reducers' tables from the events topic — in place, or as a new version
built beside the serving one (blue/green) — and look at a student's state as of a past time.

Responsibilities:

1. know which version of each reducer serves queries (the compacted versions topic) and refuse
   what would corrupt a table: rewinding a consumer group that live workers hold, promoting a
   version that has not caught up, running code whose version was never built;
2. rewind a consumer group on the events topic, to the start or to a time (Kafka's
   offsets-for-times), by committing offsets for it while it is empty;
3. clear the tables being rebuilt (a tombstone for every key in their changelogs), so that no
   stale value survives in a changelog or in a worker's local RocksDB (recovery applies them);
4. measure progress: a group's committed offsets against the end offsets when the work began.

Why a rewind is safe for the reducers that are not rebuilt: each table entry remembers the
last event it folded in per source partition (`lo_stream.tables.entries`), so those reducers
skip every re-read event.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError, NotCoordinatorError
from aiokafka.structs import OffsetAndMetadata

from lo_stream.envelopes import MalformedEventError, decode_envelopes
from lo_stream.reducers import STUDENT, Reducer, ReducerRegistry
from lo_stream.settings import Settings
from lo_stream.tables import changelog_spec, changelog_topic
from lo_stream.tables.entries import fold, items_for, runs_for
from lo_stream.topics import ensure_topics, partition_of

__all__ = [
    "Deployment",
    "Progress",
    "ReplayRefused",
    "build_group",
    "build_lane",
    "drop_version",
    "history",
    "prepare_worker",
    "promote",
    "rewind",
    "start_build",
    "state_at",
    "student_records",
    "version_report",
]

logger = logging.getLogger(__name__)

COORDINATOR_WAIT = 30.0  # seconds


class ReplayRefused(RuntimeError):
    """A replay, build or promotion that would leave a table wrong; the message says what to do."""


def build_group(settings: Settings, reducer_id: str, version: int) -> str:
    """The consumer group of the lane building one reducer version."""
    return f"{settings.app_id}-build-{reducer_id}-v{version}"


def build_lane(settings: Settings, reducers: ReducerRegistry) -> Reducer | None:
    """The reducer version this worker builds, when it runs as a build lane (``settings.build_lane``)."""
    if not settings.build_lane:
        return None
    reducer_id, version = settings.build_lane.rsplit("@", 1)
    return replace(reducers.get(reducer_id), version=int(version))


@dataclass
class Progress:
    """How far a consumer group is from the end offsets of the events topic when the work began."""

    group: str
    start: dict[int, int]
    end: dict[int, int]

    @property
    def total(self) -> int:
        return sum(max(self.end[p] - self.start[p], 0) for p in self.end)

    def done(self, committed: dict[int, int]) -> int:
        return sum(
            min(max(committed.get(p, self.start[p]) - self.start[p], 0), max(self.end[p] - self.start[p], 0))
            for p in self.end
        )


class Deployment:
    """What replay needs from Kafka about one deployment: groups, offsets, changelogs, versions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events = settings.topics.events
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)

    async def __aenter__(self) -> "Deployment":
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def partitions(self, topic: str | None = None) -> list[TopicPartition]:
        """The partitions of `topic` (default: the events topic); none if it does not exist."""
        if topic is None:
            return [TopicPartition(self.events, p) for p in range(self.settings.partitions)]
        (described,) = await self._admin.describe_topics([topic])
        if described["error_code"]:
            return []
        return [TopicPartition(topic, p["partition"]) for p in sorted(described["partitions"], key=lambda p: p["partition"])]

    async def read(self, topic: str, partitions: Iterable[int] | None = None,
                   until: dict[int, int] | None = None) -> AsyncIterator[ConsumerRecord]:
        """Every record of `topic` (or of some partitions) from the start to its end now (or `until`)."""
        wanted = [tp for tp in await self.partitions(topic) if partitions is None or tp.partition in partitions]
        if not wanted:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
        try:
            consumer.assign(wanted)
            await consumer.seek_to_beginning(*wanted)
            ends = await consumer.end_offsets(wanted)
            stops = {tp: min(ends[tp], until[tp.partition]) if until else ends[tp] for tp in wanted}
            while pending := [tp for tp in wanted if await consumer.position(tp) < stops[tp]]:
                fetched = await consumer.getmany(*pending, timeout_ms=1000)
                for tp, records in fetched.items():
                    for record in records:
                        if record.offset < stops[tp]:
                            yield record
        finally:
            await consumer.stop()

    async def members(self, group: str) -> int:
        """Consumers holding `group` now (0 when it is empty or unknown)."""
        (response,) = await _retrying(self._admin.describe_consumer_groups, [group])
        described = response.to_object()["groups"][0]
        return len(described["members"])

    async def committed(self, group: str, topic: str | None = None) -> dict[int, int]:
        """`group`'s committed offsets on `topic` (default: the events topic), by partition."""
        offsets = await _retrying(self._admin.list_consumer_group_offsets, group, partitions=await self.partitions(topic))
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        ends = await self._consumer.end_offsets(await self.partitions(topic))
        return {tp.partition: offset for tp, offset in ends.items()}

    async def lag(self, group: str, topic: str | None = None) -> int | None:
        """Records of `topic` `group` has not committed yet (None: it never committed any)."""
        committed = await self.committed(group, topic)
        if not committed:
            return None
        ends = await self.end_offsets(topic)
        return sum(max(end - committed.get(p, 0), 0) for p, end in ends.items())

    async def offsets_at(self, since: datetime.datetime | None) -> dict[int, int]:
        """The first offset of each partition at or after `since` (None: the beginning)."""
        partitions = await self.partitions()
        if since is None:
            starts = await self._consumer.beginning_offsets(partitions)
            return {tp.partition: offset for tp, offset in starts.items()}
        found = await self._consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
        ends = await self.end_offsets()
        return {tp.partition: (at.offset if at is not None else ends[tp.partition]) for tp, at in found.items()}

    async def commit(self, group: str, offsets: dict[int, int]) -> None:
        """Set `group`'s positions; Kafka itself refuses this while the group has members."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            positions = {TopicPartition(self.events, p): OffsetAndMetadata(o, "") for p, o in offsets.items()}
            consumer.assign(list(positions))  # assigned, not subscribed: it never joins the group
            await consumer.commit(positions)
        finally:
            await consumer.stop()

    async def delete_topics(self, topics: list[str]) -> list[str]:
        """Delete those of `topics` that exist; return their names."""
        existing = [topic for topic in topics if await self.partitions(topic)]
        if existing:
            await self._admin.delete_topics(existing)
        return existing

    async def groups(self) -> list[str]:
        listed = await self._admin.list_consumer_groups()
        return sorted(group for group, _ in listed)

    async def clear_table(self, reducer: Reducer) -> int:
        """Write a tombstone for every live key of a reducer version's table; return how many."""
        topic = changelog_topic(self.settings, reducer)
        latest: dict[tuple[int, bytes], bool] = {}
        async for record in self.read(topic):
            latest[(record.partition, record.key)] = record.value is not None
        live = [key for key, present in latest.items() if present]
        if live:
            producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all")
            await producer.start()
            try:
                for partition, key in live:
                    await producer.send(topic, key=key, value=None, partition=partition)
                await producer.flush()
            finally:
                await producer.stop()
        return len(live)

    async def versions(self) -> dict[str, dict]:
        """The serving version of each reducer, as recorded: ``{reducer id: {"serving": n, ...}}``."""
        records: dict[str, dict] = {}
        async for record in self.read(self.settings.topics.versions):
            if record.value is not None:
                records[record.key.decode()] = orjson.loads(record.value)
        return records

    async def record_version(self, reducer_id: str, version: int, how: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all")
        await producer.start()
        try:
            value = {"serving": version, "how": how, "at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
            await producer.send_and_wait(self.settings.topics.versions, key=reducer_id.encode(), value=orjson.dumps(value))
        finally:
            await producer.stop()


async def _retrying(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Group calls fail while the broker is still placing the group's coordinator (a new broker
    creates its offsets topic on first use): retry those for a while."""
    deadline = time.monotonic() + COORDINATOR_WAIT
    while True:
        try:
            return await call(*args, **kwargs)
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _refuse_if_live(members: int, group: str, what: str) -> None:
    if members:
        raise ReplayRefused(
            f"{members} worker(s) hold the consumer group {group!r}: stop them before {what} "
            "(a rewind under live workers would race with them; Kafka refuses it too)"
        )


async def rewind(settings: Settings, reducers: list[Reducer], since: datetime.datetime | None) -> tuple[Progress, int]:
    """Prepare an in-place replay: clear the reducers' tables, rewind the workers' group to `since`
    (None: the beginning) and record these versions as serving. Returns the progress to follow and
    the number of keys cleared. Any worker then rebuilds the tables by consuming the group."""
    group = settings.app_id
    async with Deployment(settings) as kafka:
        _refuse_if_live(await kafka.members(group), group, "replaying")
        for reducer in reducers:
            if reducer.needs_repartition:
                await _refuse_if_undrained(kafka, reducer)
        start = await kafka.offsets_at(since)
        end = await kafka.end_offsets()
        cleared = 0
        for reducer in reducers:
            cleared += await kafka.clear_table(reducer)
        await kafka.commit(group, start)
        for reducer in reducers:
            await kafka.record_version(reducer.id, reducer.version, "replay" if since is None else f"replay since {since.isoformat()}")
    return Progress(group, start, end), cleared


async def _refuse_if_undrained(kafka: Deployment, reducer: Reducer) -> None:
    """Events forwarded to a class-scoped reducer but not yet applied would be applied out of order."""
    settings = kafka.settings
    waiting = await kafka.lag(settings.app_id, f"{settings.app_id}-{reducer.table_name}-repartition")
    if waiting:
        raise ReplayRefused(
            f"{waiting} forwarded events of {reducer.id} were not applied when the workers stopped: start a worker, "
            "let it drain them, stop it, and replay again"
        )


async def start_build(settings: Settings, reducer: Reducer, since: datetime.datetime | None) -> Progress:
    """Prepare a build lane for `reducer` (at its version): a consumer group of its own that starts
    at `since` unless it already built part of the table (then it resumes)."""
    group = build_group(settings, reducer.id, reducer.version)
    async with Deployment(settings) as kafka:
        serving = (await kafka.versions()).get(reducer.id, {}).get("serving")
        if serving == reducer.version:
            raise ReplayRefused(
                f"version {reducer.version} of {reducer.id} is the one serving: build a new version beside it "
                f"(--as-version {reducer.version + 1}), or rebuild it in place with lo-stream replay --reducers {reducer.id}"
            )
        _refuse_if_live(await kafka.members(group), group, "starting another build of this version")
        end = await kafka.end_offsets()
        committed = await kafka.committed(group)
        if committed:
            logger.info("resuming the build of %s v%s", reducer.id, reducer.version)
            start = {p: committed.get(p, 0) for p in end}
        else:
            await kafka.clear_table(reducer)  # left over from a build that was dropped
            start = await kafka.offsets_at(since)
            await kafka.commit(group, start)
    return Progress(group, start, end)


async def promote(settings: Settings, reducer: Reducer, version: int, max_lag: int) -> dict[int, int]:
    """Make `version` of a reducer the serving one: its build lane must have caught up (lag at most
    `max_lag`) and stopped, and the workers must be stopped; the workers' group is moved back to
    wherever the lane stopped, so nothing is missed when they start with the new code."""
    group, lane = settings.app_id, build_group(settings, reducer.id, version)
    async with Deployment(settings) as kafka:
        lag = await kafka.lag(lane)
        if lag is None:
            raise ReplayRefused(
                f"version {version} of {reducer.id} was never built: lo-stream replay --reducers {reducer.id} --as-version {version}"
            )
        if lag > max_lag:
            raise ReplayRefused(f"version {version} of {reducer.id} is {lag} records behind (more than --max-lag {max_lag}): wait, then promote")
        _refuse_if_live(await kafka.members(lane), lane, "promoting (stop its lo-stream replay with Ctrl-C)")
        _refuse_if_live(await kafka.members(group), group, "promoting: start them again with the new code afterwards")
        live, built = await kafka.committed(group), await kafka.committed(lane)
        handover = {p: min(live.get(p, built[p]), built[p]) for p in built}
        await kafka.commit(group, handover)
        await kafka.record_version(reducer.id, version, "promote")
    return handover


async def prepare_worker(settings: Settings, reducers: list[Reducer]) -> list[str]:
    """Before a worker starts: create its tables' changelogs, record the versions of a new deployment,
    and rebuild in place (from the beginning) any reducer version this deployment never built.
    Returns what was done, to log."""
    await ensure_topics(settings, [changelog_spec(settings, reducer) for reducer in reducers])
    if settings.build_lane:
        return []
    group = settings.app_id
    async with Deployment(settings) as kafka:
        versions = await kafka.versions()
        unbuilt = [r for r in reducers if versions.get(r.id, {}).get("serving") != r.version]
        if not unbuilt:
            return []
        if not await kafka.committed(group):  # a new deployment: nothing was consumed yet
            for reducer in unbuilt:
                await kafka.record_version(reducer.id, reducer.version, "first start")
            return []
        names = ", ".join(f"{r.id} v{r.version}" for r in unbuilt)
        members = await kafka.members(group)
        if members:
            raise ReplayRefused(
                f"this worker runs {names}, which the running workers do not: stop them all, then start the workers "
                "with the new code (the first rebuilds the tables from the beginning), or build it beside the "
                "serving version with lo-stream replay --reducers ID --as-version N and promote it"
            )
        for reducer in unbuilt:
            await kafka.clear_table(reducer)
        await kafka.commit(group, await kafka.offsets_at(None))
        for reducer in unbuilt:
            await kafka.record_version(reducer.id, reducer.version, "rebuilt at worker start")
    return [f"{names}: new to this deployment, rebuilding from the beginning of {settings.topics.events}"]


async def drop_version(settings: Settings, reducer: Reducer, version: int) -> list[str]:
    """Delete the topics of a reducer version nobody serves any more; return their names."""
    dropped = replace(reducer, version=version)
    async with Deployment(settings) as kafka:
        serving = (await kafka.versions()).get(reducer.id, {}).get("serving")
        if version in (serving, reducer.version):
            why = "serves queries" if version == serving else "is the version of the installed code"
            raise ReplayRefused(f"version {version} of {reducer.id} {why}: it cannot be dropped")
        lane = build_group(settings, reducer.id, version)
        _refuse_if_live(await kafka.members(lane), lane, "dropping the version it builds")
        return await kafka.delete_topics([
            changelog_topic(settings, dropped),
            f"{settings.app_id}-{dropped.table_name}-repartition",
            f"{lane}-{dropped.table_name}-repartition",
        ])


async def version_report(settings: Settings, reducers: list[Reducer]) -> list[dict]:
    """Per installed reducer: its code version, the serving version, and every version's lag."""
    async with Deployment(settings) as kafka:
        versions = await kafka.versions()
        groups = await kafka.groups()
        live_lag = await kafka.lag(settings.app_id)
        live_members = await kafka.members(settings.app_id)
        report = []
        for reducer in reducers:
            prefix = build_group(settings, reducer.id, 0).removesuffix("0")
            lanes = []
            for group in groups:
                version = group.removeprefix(prefix)
                if not (group.startswith(prefix) and version.isdigit()):
                    continue
                if await kafka.partitions(changelog_topic(settings, replace(reducer, version=int(version)))):  # not dropped
                    lanes.append({"version": int(version), "lag": await kafka.lag(group),
                                  "running": await kafka.members(group) > 0})
            report.append({
                "reducer": reducer.id,
                "code": reducer.version,
                "serving": versions.get(reducer.id, {}).get("serving"),
                "workers": {"lag": live_lag, "running": live_members > 0},
                "builds": sorted(lanes, key=lambda lane: lane["version"]),
            })
    return report


async def state_at(settings: Settings, reducer: Reducer, student: str, at: datetime.datetime) -> dict[str, Any]:
    """A student's table entries of a (student-scoped) reducer as of `at`, by key: their events up to
    then (by the time Kafka stored them) folded through the reducer, without touching any table."""
    if STUDENT not in reducer.scope:
        raise ReplayRefused(f"{reducer.id} is kept per {'+'.join(reducer.scope)}, not per student: time travel needs a student scope")
    entries: dict[str, dict] = {}
    async for record, envelopes in student_records(settings, student, at):
        folded = await fold(reducer, runs_for(reducer, envelopes, record.partition, record.offset), entries.get)
        entries.update(folded.changed)
    return {key: entry["state"] for key, entry in entries.items()}


async def student_records(settings: Settings, student: str, at: datetime.datetime | None = None
                          ) -> AsyncIterator[tuple[ConsumerRecord, list[dict]]]:
    """A student's messages on the events topic, in order, each with its envelopes: from the start
    to the end now (or to `at`, by the time Kafka stored them). Only the student's partition is
    read; malformed messages are left out, as the workers dead-lettered them."""
    partition = partition_of(settings, student)
    async with Deployment(settings) as kafka:
        until = {partition: (await kafka.offsets_at(at))[partition]} if at is not None else None
        async for record in kafka.read(settings.topics.events, [partition], until):
            if record.key is None or record.key.decode() != student:
                continue
            try:
                yield record, decode_envelopes(record.value, student)
            except MalformedEventError:
                continue


async def history(settings: Settings, reducer: Reducer, student: str, key: str) -> list[tuple[float, dict]]:
    """The events a student sent that `reducer` keeps under `key`, in the order the workers apply
    them, each with its time in ms (the client's ``timestamp``, else when Kafka stored it): folding
    the first n of them gives the state as of the n-th (writing playback on the dashboards)."""
    found = []
    async for record, envelopes in student_records(settings, student):
        for item in items_for(reducer, envelopes, record.partition, record.offset, student=student):
            if item.key == key:
                timestamp = item.envelope["client"].get("timestamp")
                usable = isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool)
                found.append((timestamp if usable else record.timestamp, item.envelope))
    return found
