"""After a rebalance, seek the source partitions to their commits before any of their messages is read.

When a worker is assigned partitions, Faust pauses them, restores the tables from their changelogs,
then (faust-streaming 0.15.3, ``Recovery._resume_streams`` and ``Recovery.on_recovery_completed``)
resumes the source partitions, seeks them to their committed offsets, and only then resumes its
streams' flow, which clears their queues. Its streams already took messages during the restore.
So messages fetched during the seek could be processed twice, dropped from a cleared queue, or
skipped by the read offset the seek had moved. Probes in Faust showed it on every restart under
exactly-once (runs of 3-16 events per partition lost); under both guarantees, duplicates made
commits crawl for a minute after a restore.

`SeekFirstTableManager` gives Faust a recovery that defers resuming the source partitions until the
seek is done and the streams' flow is on again, in one step with no wait in between: nothing can be
fetched from them before then.

It also keeps `restored`, an event set while the tables hold every record of their active
partitions: cleared when a rebalance starts, set when Faust reports its actives ready. Reading a
table between the two answers from a partly restored store (the query API waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Iterator, Set

from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, AppT

__all__ = ["SeekFirstTableManager"]


class SeekFirstRecovery(Recovery):
    """Faust's table recovery, resuming source partitions only once they are seeked and flowing."""

    @contextlib.contextmanager
    def _resume_after_seek(self) -> Iterator[None]:
        consumer = self.app.consumer
        resume_partitions, resume_flow = consumer.resume_partitions, consumer.resume_flow
        deferred: Set[TP] = set()

        def defer(tps: Set[TP]) -> None:
            deferred.update(tps)

        def resume_flow_then_partitions() -> None:
            # Faust calls this right after flow_control.resume(), the seek done: streams take
            # messages from here on, so the partitions may be fetched.
            resume_flow()
            resume_partitions(deferred)

        consumer.resume_partitions, consumer.resume_flow = defer, resume_flow_then_partitions
        try:
            yield  # left early (another rebalance began): that one's recovery resumes the partitions
        finally:
            del consumer.resume_partitions, consumer.resume_flow  # back to the class's methods

    async def _resume_streams(self, generation_id: int = 0) -> None:
        with self._resume_after_seek():
            await super()._resume_streams(generation_id)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        with self._resume_after_seek():
            await super().on_recovery_completed(generation_id)


class SeekFirstTableManager(TableManager):
    """Faust's table manager, with `SeekFirstRecovery` and the `restored` event."""

    def __init__(self, app: AppT, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.restored = asyncio.Event()

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        self.restored.clear()

    def on_actives_ready(self) -> None:
        super().on_actives_ready()
        self.restored.set()

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
