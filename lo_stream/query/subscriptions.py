"""Live queries: the full result once, then only the rows that changed, from the change feed.

Responsibilities:

1. one change feed per process, started with the first subscription, shared by all;
2. for each batch of changes, find the subscriptions they touch: a change of a student-keyed
   table touches the subscriptions whose result holds that student; any other change (a class
   table) or a roster change touches every subscription using it;
3. re-run a touched query for just the changed students and send those of their rows that differ
   from what the subscriber last got (``update``; nothing when none does), or re-run it whole and
   send the full result (``result``);
4. stop cleanly: an unsubscribed or disconnected subscription leaves no task behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Awaitable, Callable

import orjson

from lo_stream.query.executor import Unavailable
from lo_stream.query.language import QueryError, node_references
from lo_stream.reducers import STUDENT, Reducer
from lo_stream.settings import Settings
from lo_stream.tables.change_feed import Change, ChangeFeed

__all__ = ["Subscription", "SubscriptionHub"]

logger = logging.getLogger(__name__)

# Successive updates of one subscription are this far apart at least. Measured (docs/benchmarks.md):
# re-running on every change batch at 100 events/s kept the worker's event loop busy with ~60 runs
# a second, so its agents fell behind and the updates showed seconds-old tables.
UPDATE_INTERVAL_S = 0.2

# Runs a subscription's query; None means whole, a set restricts it to those students.
Runner = Callable[[set[str] | None], Awaitable[Any]]
Sender = Callable[[dict], Awaitable[None]]


def reducers_of(document: dict, returns: str) -> set[str]:
    """The reducer ids the node `returns` reads, following variables."""
    dag = document["execution_dag"]
    pending, seen, found = [returns], set(), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in [dag[name], *node_references(dag[name])]:
            if node.get("dispatch") == "keys":
                found.add(node["reducer"])
            elif node.get("dispatch") == "variable":
                pending.append(node["variable_name"])
    return found


def students_of(result: Any) -> set[str]:
    """The students a result holds rows for (their ``key.student``)."""
    rows = result if isinstance(result, list) else []
    return {row["key"][STUDENT] for row in rows if isinstance(row, dict) and STUDENT in (row.get("key") or {})}


class Subscription:
    """One client's live query. Changes that arrive while an update runs, or within
    `UPDATE_INTERVAL_S` of the last one, are merged into the next one: a busy stream costs at
    most a few runs a second per subscription, never a backlog. While the tables are being
    restored after a rebalance the update is tried again, changes kept."""

    def __init__(self, subscription_id: str, reducer_ids: set[str], run: Runner, send: Sender) -> None:
        self.id = subscription_id
        self.reducer_ids = reducer_ids
        self.run = run
        self.send = send
        self.students: set[str] = set()
        self._whole = False
        self._changed: set[str] = set()
        self._task: asyncio.Task | None = None
        self._last_run = 0.0  # time.monotonic() of the last update
        self._sent_rows: dict[str, bytes] = {}  # student -> digest of the row the subscriber has

    async def send_full(self) -> None:
        result = await self.run(None)
        self.students = students_of(result)
        self._sent_rows = {}
        self._changed_rows(result if isinstance(result, list) else [])
        await self.send({"subscription": self.id, "type": "result", "result": result})

    def _changed_rows(self, rows: list) -> list:
        """The rows that differ from the one the subscriber has for their student, each noted as
        sent. A change can reach the feed after a result already held it (the subscription began
        between a table's write and its changelog record's arrival): its row is the same, and
        is not sent again."""
        changed = []
        for row in rows:
            key = row.get("key") if isinstance(row, dict) else None
            student = key.get(STUDENT) if isinstance(key, dict) else None
            if student is not None:
                digest = hashlib.blake2b(orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS),
                                         digest_size=16).digest()
                if self._sent_rows.get(student) == digest:
                    continue
                self._sent_rows[student] = digest
            changed.append(row)
        return changed

    def mark(self, students: set[str] | None) -> None:
        """Schedule an update: of these students' rows, or (None) of the whole result."""
        if students is None:
            self._whole = True
        else:
            self._changed |= students
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _flush(self) -> None:
        while self._whole or self._changed:
            # Let changes gather: a run per few events would starve the worker's agents.
            await asyncio.sleep(self._last_run + UPDATE_INTERVAL_S - time.monotonic())
            self._last_run = time.monotonic()
            whole, changed = self._whole, self._changed
            self._whole, self._changed = False, set()
            try:
                if whole:
                    await self.send_full()
                else:
                    rows = self._changed_rows(await self.run(changed))
                    if rows:
                        await self.send({"subscription": self.id, "type": "update", "rows": rows})
            except Unavailable as exc:  # tables being restored: these changes go in the next try
                logger.info("live query %s waits for the tables: %s", self.id, exc)
                self._whole, self._changed = self._whole or whole, self._changed | changed
            except (ConnectionError, QueryError) as exc:
                logger.info("live query %s stopped updating: %s", self.id, exc)
                return
            except Exception:
                logger.exception("live query %s update failed", self.id)
                return


class SubscriptionHub:
    """The subscriptions of one process and the change feed that drives them."""

    def __init__(self, settings: Settings, reducers: dict[str, Reducer]) -> None:
        self.settings = settings
        self.reducers = reducers
        self.subscriptions: dict[int, Subscription] = {}
        self._feed_task: asyncio.Task | None = None
        self._feed_ready: asyncio.Event | None = None

    async def subscribe(self, subscription: Subscription) -> None:
        await self._ensure_feed()
        self.subscriptions[id(subscription)] = subscription
        try:
            await subscription.send_full()
        except Exception:
            self.unsubscribe(subscription)
            raise

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.pop(id(subscription), None)
        subscription.close()

    def roster_changed(self, course_id: str) -> None:
        """A roster or course record changed: every live query re-runs whole (rosters change rarely)."""
        for subscription in list(self.subscriptions.values()):
            subscription.mark(None)

    async def stop(self) -> None:
        for subscription in list(self.subscriptions.values()):
            self.unsubscribe(subscription)
        if self._feed_task is not None:
            self._feed_task.cancel()
            await asyncio.gather(self._feed_task, return_exceptions=True)

    async def _ensure_feed(self) -> None:
        if self._feed_task is None:
            self._feed_ready = asyncio.Event()
            self._feed_task = asyncio.create_task(self._follow())
        await self._feed_ready.wait()
        if self._feed_task.done():
            self._feed_task.result()  # the feed failed: say why

    async def _follow(self) -> None:
        try:
            async with ChangeFeed(self.settings, self.reducers.values(), from_beginning=False) as feed:
                self._feed_ready.set()
                async for batch in feed.batches():
                    self._dispatch(batch)
        finally:
            self._feed_ready.set()

    def _dispatch(self, batch: list[Change]) -> None:
        if not self.subscriptions:
            return
        by_reducer: dict[str, set[str]] = {}
        whole: set[str] = set()
        for change in batch:
            reducer = self.reducers.get(change.reducer_id)
            if reducer is None or reducer.version != change.version:
                continue
            if STUDENT in reducer.scope:
                student = change.key
                if len(reducer.scope) > 1:
                    student = orjson.loads(change.key)[reducer.scope.index(STUDENT)]
                by_reducer.setdefault(reducer.id, set()).add(student)
            else:
                whole.add(reducer.id)
        for subscription in list(self.subscriptions.values()):
            if subscription.reducer_ids & whole:
                subscription.mark(None)
                continue
            students = set().union(*(by_reducer.get(r, set()) for r in subscription.reducer_ids))
            students &= subscription.students
            if students:
                subscription.mark(students)
