"""Folding events into table entries: the one piece of logic the worker and offline mode share.

An entry is what a reducer's table holds for one key (see `lo_stream.tables`)::

    {"state": ..., "partition": p, "offset": o, "applied": {"<p>": [offset, index in batch]}}

`fold` applies a message's items to the entries of their keys, skipping events at or before a
key's ``applied`` mark (re-deliveries), so that the same events always give the same tables,
whether they come from Kafka (`lo_stream.agents`) or from a list (`lo_stream.offline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, Iterable, NamedTuple

from lo_stream.reducers import PLAIN_STATES, UNCHANGED, Reducer

__all__ = ["Batch", "Failure", "Folded", "Item", "fold", "items_for"]


class Item(NamedTuple):
    """One envelope for one reducer key, with where it came from on the events topic."""

    key: str
    envelope: dict
    partition: str  # a str: JSON object keys in the stored table value are strings
    offset: int
    index: int  # position in a batch message


_new_item = tuple.__new__  # Item's own constructor, without the Python-level __new__ of a NamedTuple
_client = itemgetter("client")


class Batch:
    """The envelopes of consecutive messages of one partition, laid out once for every reducer.

    `messages`: (offset, student, envelopes) each, in order. `student` is the message's key where
    every envelope was checked to be that student's (`lo_stream.envelopes.decode_envelopes`), else
    None: a reducer kept per student then takes a message's envelopes under that key without
    looking at each. Reducers of the same scope share each envelope's key, computed once for the
    batch.

    In the worker, envelopes are those `decode_envelopes` accepted (``client`` an object, its
    ``event`` and ``source`` strings or missing, the student a string), so taking their keys and
    types cannot raise."""

    def __init__(self, partition: int, messages: Iterable[tuple[int, str | None, list[dict]]]) -> None:
        self.source = str(partition)  # a str: JSON object keys in the stored table value are strings
        self.envelopes: list[dict] = []
        self.offsets: list[int] = []
        self.indexes: list[int] = []
        self.students: list[str | None] = []
        for offset, student, envelopes in messages:
            count = len(envelopes)
            self.envelopes.extend(envelopes)
            self.offsets.extend([offset] * count)
            self.indexes.extend(range(count))
            self.students.extend([student] * count)
        self._students_known = None not in self.students
        self._keys: dict[tuple[str, ...], list[str | None]] = {}
        self._kinds_of: list[tuple[str | None, str | None]] | None = None

    def items(self, reducer: Reducer) -> list[Item]:
        """The items the reducer wants, each under the key of its scope, in the batch's order."""
        source = self.source
        if reducer.per_student and self._students_known:
            keys: list[str | None] = self.students
        else:
            keys = self._keys.get(reducer.scope)  # type: ignore[assignment]
            if keys is None:
                key_of = reducer.key
                keys = self._keys[reducer.scope] = [key_of(envelope) for envelope in self.envelopes]
        if reducer.wants_all:
            if keys is self.students or None not in keys:  # the common case, laid out without a Python loop
                return list(map(_new_item, repeat(Item), zip(keys, self.envelopes, repeat(source), self.offsets,
                                                             self.indexes)))
            return [_new_item(Item, (key, envelope, source, offset, index))
                    for key, envelope, offset, index in zip(keys, self.envelopes, self.offsets, self.indexes)
                    if key is not None]
        kinds = self._kinds()
        wanted = {kind: reducer.wants_kind(*kind) for kind in set(kinds)}  # a batch holds few kinds
        return [_new_item(Item, (key, envelope, source, offset, index))
                for key, envelope, offset, index, kind in zip(keys, self.envelopes, self.offsets, self.indexes, kinds)
                if key is not None and wanted[kind]]

    def _kinds(self) -> list[tuple[str | None, str | None]]:
        """Each envelope's (source, event type), as reducers pick events by them."""
        if self._kinds_of is None:
            self._kinds_of = [(client.get("source"), client.get("event")) for client in map(_client, self.envelopes)]
        return self._kinds_of


def items_for(reducer: Reducer, envelopes: list[dict], partition: int, offset: int,
              student: str | None = None) -> list[Item]:
    """The items of one message a reducer wants (see `Batch`)."""
    return Batch(partition, [(offset, student, envelopes)]).items(reducer)


@dataclass
class Failure:
    """An event the reducer raised on: the stream goes on without it."""

    item: Item
    error: str


@dataclass
class Folded:
    changed: dict[str, dict] = field(default_factory=dict)
    applied: int = 0
    redelivered: int = 0
    failures: list[Failure] = field(default_factory=list)


async def fold(reducer: Reducer, items: Iterable[Item], entry_of: Callable[[str], dict | None]) -> Folded:
    """Apply items in order to the current entries (`entry_of(key)`); return the new entries by key.

    Keys are independent, so each key's items are folded together: its entry is read once and
    built once, however many items it has. An item that returned `UNCHANGED` moves no mark and
    makes no entry (a key whose items all did gets none): delivered again, it meets the state it
    met the first time (reducers are pure), so it changes nothing again; and an entry depends only
    on the items that changed it, however the items were batched."""
    items = items if isinstance(items, list) else list(items)
    by_key: dict[str, list[Item]] = {}
    last_key, same_key = None, None
    for item in items:
        if item[0] != last_key:  # items of one key often come in a row (one message's)
            last_key = item[0]
            same_key = by_key.get(last_key)
            if same_key is None:
                same_key = by_key[last_key] = []
        same_key.append(item)  # type: ignore[union-attr]
    folded = Folded()
    function, settle = reducer.function, reducer.settle
    applied = redelivered = 0
    for key, same_key in by_key.items():
        entry = entry_of(key)
        state: Any = entry["state"] if entry else reducer.initial_state()
        marks: dict[str, Any] = dict(entry["applied"]) if entry else {}
        last = None
        source, done = None, None  # the mark of the partition of the items at hand, kept out of `marks`
        for item in same_key:
            _, envelope, partition, offset, index = item
            if partition != source:
                if done is not None:
                    marks[source] = done  # type: ignore[index]
                source, done = partition, marks.get(partition)
            if done is not None and (offset < done[0] or (offset == done[0] and index <= done[1])):
                redelivered += 1
                continue  # applied before a restart, a rebalance or a rewind
            try:
                result = function(envelope, state)
                if type(result) not in PLAIN_STATES and result is not UNCHANGED:  # an awaitable, or a pair
                    result = await settle(result)
            except Exception as exc:  # a researcher's function: its failure must not stop the stream
                folded.failures.append(Failure(item, f"{type(exc).__name__}: {exc}"))
                if entry is None and last is None:  # a key's state is a fresh copy until an event is applied
                    state = reducer.initial_state()
                continue
            applied += 1
            if result is UNCHANGED:
                continue
            state = result
            done = (offset, index)
            last = item
        if last is not None:
            marks[source] = done  # type: ignore[index]
            folded.changed[key] = {
                "state": state,
                "offset": last.offset,
                "partition": int(last.partition),
                "applied": {partition: [mark[0], mark[1]] for partition, mark in marks.items()},
            }
    folded.applied, folded.redelivered = applied, redelivered
    if len(folded.failures) > 1:
        folded.failures = _in_order(folded.failures, items)
    return folded


def _in_order(failures: list[Failure], items: list[Item]) -> list[Failure]:
    """Failures in the order of their items in the batch, not grouped by key (an item given twice
    may fail twice: its n-th failure takes its n-th place)."""
    places: dict[int, list[int]] = {}
    for place, item in enumerate(items):
        places.setdefault(id(item), []).append(place)
    taken: dict[int, int] = {}

    def place_of(failure: Failure) -> int:
        n = taken.get(id(failure.item), 0)
        taken[id(failure.item)] = n + 1
        return places[id(failure.item)][n]

    return [failure for _, failure in sorted((place_of(f), f) for f in failures)]
