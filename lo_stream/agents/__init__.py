"""Faust agents that consume the events topic, keyed by student, and update tables."""

from __future__ import annotations

import faust

from lo_stream.settings import Settings
from lo_stream.tables import rocksdb_table

__all__ = ["install_agents"]


def install_agents(app: faust.App, settings: Settings) -> None:
    """Register the agents of a deployment on `app`.

    For now one agent keeps the number of events per student key (table ``event_counts``).
    """
    # internal=True: Faust creates the topic with our partition count when it is missing.
    events = app.topic(
        settings.topics.events,
        key_type=str,
        value_serializer="raw",
        partitions=settings.partitions,
        internal=True,
    )
    event_counts = rocksdb_table(app, settings, "event_counts", default=lambda: {"count": 0, "offset": -1})

    @app.agent(events, name="count_events")
    async def count_events(stream: faust.StreamT) -> None:
        async for event in stream.events():
            student, offset = event.key, event.message.offset
            current = event_counts[student]
            # A student's events all come from one partition, in order: an offset we have
            # already applied is a re-delivery (at-least-once), and counting it would double it.
            if offset <= current["offset"]:
                continue
            event_counts[student] = {"count": current["count"] + 1, "offset": offset}
