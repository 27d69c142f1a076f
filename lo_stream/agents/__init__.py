"""Faust agents: route every event on the events topic to the reducers that want it.

Responsibilities of the reducing agent:

1. decode each message into envelopes (one, or a batch of one student's), dead-lettering
   anything malformed with the reason;
2. give each envelope, in order, to every reducer that wants it, under the key of its scope;
3. write each reducer's table once per message per key, with the offset of that message, and
   skip keys whose stored offset shows the message was already applied (a re-delivery);
4. dead-letter an event a reducer raised on, with the reducer id and the error, and carry on:
   the other reducers still get that event.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import faust

from lo_stream.agents.metrics import WorkerMetrics
from lo_stream.dead_letters import dead_letter_record
from lo_stream.envelopes import MalformedEventError, decode_envelopes
from lo_stream.reducers import Reducer, ReducerDefinitionError
from lo_stream.settings import Settings
from lo_stream.tables import reducer_table

__all__ = ["install_agents"]

logger = logging.getLogger(__name__)


def install_agents(app: faust.App, settings: Settings, reducers: Iterable[Reducer]) -> None:
    """Register the reducing agent and one table per reducer on `app`."""
    reducers = list(reducers)
    regrouped = [r.id for r in reducers if r.needs_repartition]
    if regrouped:
        raise ReducerDefinitionError(
            f"reducers {regrouped} are not keyed by student; only student scopes (optionally with event "
            "fields, e.g. scope=('student', 'doc_id')) run in this version"
        )
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
    metrics = WorkerMetrics(app)

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

    async def reduce_message(event: faust.EventT) -> None:
        offset = event.message.offset
        try:
            envelopes = decode_envelopes(event.value, event.key)
        except MalformedEventError as exc:
            await send_dead_letter(event, f"malformed event: {exc}", event.value)
            return
        for reducer in reducers:
            table = tables[reducer.id]
            changed: dict[str, Any] = {}
            for envelope in envelopes:
                if not reducer.wants(envelope):
                    continue
                key = reducer.key(envelope)
                if key is None:
                    continue
                if key in changed:
                    state = changed[key]
                else:
                    stored = table.get(key)
                    if stored is not None and stored["offset"] >= offset:
                        metrics.redeliveries.labels(reducer.id).inc()
                        continue  # already applied before a restart or rebalance
                    state = reducer.initial_state() if stored is None else stored["state"]
                try:
                    changed[key] = await reducer.apply(envelope, state)
                    metrics.events.labels(reducer.id).inc()
                except Exception as exc:  # a researcher's function: its failure must not stop the stream
                    metrics.errors.labels(reducer.id).inc()
                    await send_dead_letter(
                        event, "reducer raised", envelope, reducer=reducer.id, version=reducer.version,
                        error=f"{type(exc).__name__}: {exc}",
                    )
            for key, state in changed.items():
                table[key] = {"state": state, "offset": offset}

    @app.agent(events, name="lo_stream.reduce")
    async def reduce_events(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await reduce_message(event)
