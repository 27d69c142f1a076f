"""Faust agents: route every event on the events topic to the reducers that want it.

Responsibilities:

1. decode each message into envelopes (one, or a batch of one student's), dead-lettering
   anything malformed with the reason;
2. give each envelope, in order, to every reducer that wants it, under the key of its scope;
   a reducer whose scope is not keyed by student (e.g. per class) gets its events through a
   repartition topic keyed by its own key;
3. write each reducer's table once per message per key, remembering per source partition the
   position of the last event applied, and skip events at or before it (re-deliveries);
4. dead-letter an event a reducer raised on, with the reducer id and the error, and carry on:
   the other reducers still get that event.

Repartitioning is done by hand rather than with Faust's ``group_by``: one message may hold a
batch of envelopes that belong to several keys, and each forwarded event must keep its source
partition and offset so that re-deliveries can be recognised downstream.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import faust
import orjson

from lo_stream.agents.metrics import WorkerMetrics
from lo_stream.dead_letters import dead_letter_record
from lo_stream.envelopes import MalformedEventError, decode_envelopes
from lo_stream.reducers import Reducer
from lo_stream.settings import Settings
from lo_stream.tables import reducer_table
from lo_stream.tables.entries import Item, fold, items_for

__all__ = ["install_agents"]

logger = logging.getLogger(__name__)


def install_agents(
    app: faust.App, settings: Settings, reducers: Iterable[Reducer], metrics: WorkerMetrics
) -> dict[str, faust.Table]:
    """Register the reducing agent and one table per reducer on `app`; return the tables by reducer id."""
    reducers = list(reducers)
    # internal=True: Faust creates the topic with our partition count when it is missing.
    events = app.topic(
        settings.topics.events,
        key_type=str,
        value_serializer="raw",
        partitions=settings.partitions,
        internal=True,
    )
    dead_letters = app.topic(settings.topics.dead_letters, key_serializer="raw", value_serializer="raw")
    tables = {reducer.id: reducer_table(app, settings, reducer) for reducer in reducers}
    # Bound once: labels() per event would cost a lookup and a lock on the hot path.
    applied_events = {r.id: metrics.events.labels(r.id) for r in reducers}
    failed_events = {r.id: metrics.errors.labels(r.id) for r in reducers}
    redelivered_events = {r.id: metrics.redeliveries.labels(r.id) for r in reducers}

    async def send_dead_letter(event: faust.EventT, reason: str, raw: Any, **context: Any) -> None:
        message = event.message
        logger.warning("dead letter (%s) at %s[%s]@%s", reason, message.topic, message.partition, message.offset)
        metrics.dead_letters.labels(reason.split(":")[0]).inc()
        await dead_letters.send(
            key=(event.key or "").encode(),
            value=dead_letter_record(
                reason, raw, stage="worker", topic=message.topic, partition=message.partition,
                offset=message.offset, key=event.key, **context,
            ),
        )

    async def apply(reducer: Reducer, event: faust.EventT, items: list[Item]) -> None:
        """Apply one message's items to a reducer's table: one write per key."""
        table = tables[reducer.id]
        folded = await fold(reducer, items, table.get)
        applied_events[reducer.id].inc(folded.applied)
        redelivered_events[reducer.id].inc(folded.redelivered)
        for failure in folded.failures:
            failed_events[reducer.id].inc()
            await send_dead_letter(
                event, "reducer raised", failure.item.envelope, reducer=reducer.id, version=reducer.version,
                error=failure.error,
            )
        for key, entry in folded.changed.items():
            table[key] = entry

    async def reduce_message(event: faust.EventT) -> None:
        message = event.message
        try:
            envelopes = decode_envelopes(event.value, event.key)
        except MalformedEventError as exc:
            await send_dead_letter(event, f"malformed event: {exc}", event.value)
            return
        for reducer in reducers:
            items = items_for(reducer, envelopes, message.partition, message.offset)
            if not items:
                continue
            if reducer.needs_repartition:
                await forward(reducer, items)
            else:
                await apply(reducer, event, items)

    async def forward(reducer: Reducer, items: list[Item]) -> None:
        by_key: dict[str, list] = {}
        for item in items:
            by_key.setdefault(item.key, []).append(item._asdict())
        for key, batch in by_key.items():
            await regroup_topics[reducer.id].send(key=key, value=orjson.dumps(batch))

    regroup_topics = {
        reducer.id: _install_regrouped(app, settings, reducer, apply) for reducer in reducers if reducer.needs_repartition
    }

    @app.agent(events, name="lo_stream.reduce")
    async def reduce_events(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await reduce_message(event)

    return tables


def _install_regrouped(app: faust.App, settings: Settings, reducer: Reducer, apply: Any) -> faust.TopicT:
    """The repartition topic of a reducer not keyed by student, and the agent applying it."""
    topic = app.topic(
        f"{app.conf.id}-{reducer.table_name}-repartition",  # a build lane has its own
        key_type=str,
        value_serializer="raw",
        partitions=settings.partitions,
        internal=True,
    )

    @app.agent(topic, name=f"lo_stream.regroup.{reducer.table_name}")
    async def reduce_regrouped(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await apply(reducer, event, [Item(**item) for item in orjson.loads(event.value)])

    return topic
