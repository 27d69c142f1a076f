"""Folding events into table entries: the one piece of logic the worker and offline mode share.

An entry is what a reducer's table holds for one key (see `lo_stream.tables`)::

    {"state": ..., "partition": p, "offset": o, "applied": {"<p>": [offset, index in batch]}}

`fold` applies messages' envelopes, laid out for a reducer as runs of one key (`Batch`), to the
entries of their keys, skipping events at or before a key's ``applied`` mark (re-deliveries), so
that the same events always give the same tables, whether they come from Kafka
(`lo_stream.agents`) or from a list (`lo_stream.offline`).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable, Iterable, NamedTuple

from lo_stream.reducers import PLAIN_STATES, UNCHANGED, Reducer

__all__ = ["Batch", "Failure", "Folded", "Item", "Run", "fold", "items_for", "runs_for", "runs_of"]


class Item(NamedTuple):
    """One envelope for one reducer key, with where it came from on the events topic."""

    key: str
    envelope: dict
    partition: str  # a str: JSON object keys in the stored table value are strings
    offset: int
    index: int  # position in a batch message


class Run(NamedTuple):
    """Envelopes of one message for one reducer key, in order: what `fold` takes.

    A reducer kept per student takes a whole message as one run; a run lists the positions of its
    envelopes in the message when it does not hold the whole message."""

    key: str
    envelopes: list[dict]
    partition: str  # as in Item
    offset: int
    indexes: tuple[int, ...] | None  # each envelope's position in the message; None: 0, 1, 2, ...

    def items(self) -> list[Item]:
        indexes = range(len(self.envelopes)) if self.indexes is None else self.indexes
        return [Item(self.key, envelope, self.partition, self.offset, index)
                for envelope, index in zip(self.envelopes, indexes)]


_new = tuple.__new__  # a NamedTuple's own constructor, without its Python-level __new__


def runs_of(items: Iterable[Item]) -> list[Run]:
    """Each item as a run of its own."""
    return [_new(Run, (key, [envelope], partition, offset, (index,))) for key, envelope, partition, offset, index in items]


class Batch:
    """Consecutive messages of one partition, laid out once for every reducer.

    `messages`: (offset, student, envelopes) each, in order. `student` is the message's key where
    every envelope was checked to be that student's (`lo_stream.envelopes.decode_envelopes`), else
    None. A reducer kept per student then takes each message as one run under that key (less the
    envelopes it does not want) without looking at each envelope's student. Other scopes key each
    envelope, once per scope for the batch, and take a stretch of a message's envelopes of one key
    (less those they do not want) as a run.

    In the worker, envelopes are those `decode_envelopes` accepted (``client`` an object, its
    ``event`` and ``source`` strings or missing, the student a string), so taking their keys and
    types cannot raise."""

    def __init__(self, partition: int, messages: Iterable[tuple[int, str | None, list[dict]]]) -> None:
        self.source = str(partition)  # a str: JSON object keys in the stored table value are strings
        self.messages = messages if isinstance(messages, list) else list(messages)
        self._students_known = all(student is not None for _, student, _ in self.messages)
        self._single = all(len(envelopes) == 1 for _, _, envelopes in self.messages)
        self._envelopes: list[dict] | None = None
        self._keys: dict[tuple[str, ...], list[str | None]] = {}
        self._kinds_of: list[tuple[str | None, str | None]] | None = None
        self._kind_set: set[tuple[str | None, str | None]] | None = None

    def runs(self, reducer: Reducer) -> list[Run]:
        """The runs the reducer wants, each under the key of its scope, in the batch's order."""
        source = self.source
        wanted = None if reducer.wants_all else self._wanted(reducer)
        if reducer.per_student and self._students_known:
            if wanted is None:  # the common case: a run per message
                return [_new(Run, (student, envelopes, source, offset, None)) for offset, student, envelopes in self.messages]
            if self._single:
                return [_new(Run, (student, envelopes, source, offset, None))
                        for (offset, student, envelopes), kind in zip(self.messages, self._kinds()) if wanted[kind]]
            return self._grouped([student for _, student, envelopes in self.messages for _ in envelopes], wanted)
        keys = self._keys_of(reducer)
        if self._single:
            return [_new(Run, (key, envelopes, source, offset, None))
                    for (offset, _, envelopes), key, kind in zip(self.messages, keys, keys if wanted is None else self._kinds())
                    if key is not None and (wanted is None or wanted[kind])]
        return self._grouped(keys, wanted)

    def items(self, reducer: Reducer) -> list[Item]:
        """The envelopes the reducer wants, one item each (see `runs`)."""
        return [item for run in self.runs(reducer) for item in run.items()]

    def _grouped(self, keys: list[str | None], wanted: dict | None) -> list[Run]:
        """A run per stretch of a message's envelopes with the same key (`keys`: each envelope's),
        of those the reducer wants (`wanted` by kind; None: all)."""
        source, kinds = self.source, self._kinds() if wanted is not None else None
        runs: list[Run] = []
        first = 0  # the place in `keys` of the message's first envelope
        for offset, _, envelopes in self.messages:
            count = len(envelopes)
            picked: list[tuple[str, list[int]]] = []
            for index in range(count):
                key = keys[first + index]
                if key is None or (kinds is not None and not wanted[kinds[first + index]]):  # type: ignore[index]
                    continue
                if picked and picked[-1][0] == key:
                    picked[-1][1].append(index)
                else:
                    picked.append((key, [index]))
            for key, indexes in picked:
                if len(indexes) == count:  # the whole message
                    runs.append(_new(Run, (key, envelopes, source, offset, None)))
                else:
                    runs.append(_new(Run, (key, [envelopes[i] for i in indexes], source, offset, tuple(indexes))))
            first += count
        return runs

    def _flat(self) -> list[dict]:
        """Every envelope of the batch, in order."""
        if self._envelopes is None:
            self._envelopes = [envelope for _, _, envelopes in self.messages for envelope in envelopes]
        return self._envelopes

    def _keys_of(self, reducer: Reducer) -> list[str | None]:
        """Each envelope's key in the reducer's scope, computed once per scope."""
        keys = self._keys.get(reducer.scope)
        if keys is None:
            keys = self._keys[reducer.scope] = list(map(reducer.key, self._flat()))
        return keys

    def _kinds(self) -> list[tuple[str | None, str | None]]:
        """Each envelope's (source, event type), as reducers pick events by them."""
        if self._kinds_of is None:
            self._kinds_of = [(client.get("source"), client.get("event")) for client in map(_client, self._flat())]
        return self._kinds_of

    def _wanted(self, reducer: Reducer) -> dict[tuple[str | None, str | None], bool]:
        """Whether the reducer wants each kind of event in the batch (a batch holds few kinds)."""
        if self._kind_set is None:
            self._kind_set = set(self._kinds())
        return {kind: reducer.wants_kind(*kind) for kind in self._kind_set}


_client = itemgetter("client")
_envelopes = itemgetter(1)


def runs_for(reducer: Reducer, envelopes: list[dict], partition: int, offset: int,
             student: str | None = None) -> list[Run]:
    """The runs of one message a reducer wants (see `Batch`)."""
    return Batch(partition, [(offset, student, envelopes)]).runs(reducer)


def items_for(reducer: Reducer, envelopes: list[dict], partition: int, offset: int,
              student: str | None = None) -> list[Item]:
    """The envelopes of one message a reducer wants, one item each (see `Batch`)."""
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


async def fold(reducer: Reducer, runs: Iterable[Run], entry_of: Callable[[str], dict | None]) -> Folded:
    """Apply runs in order to the current entries (`entry_of(key)`); return the new entries by key.

    Keys are independent, so each key's runs are folded together: its entry is read once and
    built once, however many events it has. A run's envelopes are at positions that grow (a
    message's, in order), so the run is checked against its key's ``applied`` mark once. An event
    that returned `UNCHANGED` moves no mark and makes no entry (a key whose events all did gets
    none): delivered again, it meets the state it met the first time (reducers are pure), so it
    changes nothing again; and an entry depends only on the events that changed it, however they
    were batched."""
    runs = runs if isinstance(runs, list) else list(runs)
    by_key: dict[str, list[int]] = {}
    last_key, same_key = None, None
    for place, run in enumerate(runs):
        if run[0] != last_key:  # a key's runs often come in a row
            last_key = run[0]
            same_key = by_key.get(last_key)
            if same_key is None:
                same_key = by_key[last_key] = []
        same_key.append(place)  # type: ignore[union-attr]
    folded = Folded()
    entries, failed = folded.changed, []
    function, settle, fresh = reducer.function, reducer.settle, reducer.initial_state
    redelivered = 0
    for key, places in by_key.items():
        entry = entry_of(key)
        state: Any = entry["state"] if entry else fresh()
        marks: dict[str, list[int]] = dict(entry["applied"]) if entry else {}  # the new entry's
        last = None  # the place of the last run that changed the state
        source, done = None, None  # the mark of the partition of the run at hand, kept out of `marks`
        for place in places:
            _, envelopes, partition, offset, indexes = runs[place]
            if partition != source:
                if done is not None:
                    marks[source] = done  # type: ignore[index]
                source, done = partition, marks.get(partition)
            first = 0  # the position of the first envelope not applied yet
            if done is not None and offset <= done[0]:  # applied before a restart, a rebalance or a rewind
                if offset < done[0]:
                    redelivered += len(envelopes)
                    continue
                first = done[1] + 1 if indexes is None else bisect_right(indexes, done[1])
                redelivered += min(first, len(envelopes))
            changed = None  # the position of the last envelope that changed the state
            position = first - 1
            for envelope in envelopes if first == 0 else envelopes[first:]:
                position += 1
                try:
                    result = function(envelope, state)
                    if type(result) not in PLAIN_STATES and result is not UNCHANGED:  # an awaitable, or a pair
                        result = await settle(result)
                except Exception as exc:  # a researcher's function: its failure must not stop the stream
                    index = position if indexes is None else indexes[position]
                    failed.append((place, position, Failure(Item(key, envelope, partition, offset, index),
                                                            f"{type(exc).__name__}: {exc}")))
                    if entry is None and last is None and changed is None:  # a fresh copy until an event is applied
                        state = fresh()
                    continue
                if result is not UNCHANGED:
                    state, changed = result, position
            if changed is not None:
                done = [offset, changed if indexes is None else indexes[changed]]
                last = place
        if last is not None:
            marks[source] = done  # type: ignore[index]
            entries[key] = {"state": state, "offset": runs[last][3], "partition": int(runs[last][2]), "applied": marks}
    events = sum(map(len, map(_envelopes, runs)))
    folded.applied, folded.redelivered = events - redelivered - len(failed), redelivered
    if failed:  # in the order of their events in the batch, not grouped by key
        folded.failures = [failure for _, _, failure in sorted(failed, key=itemgetter(0, 1))]
    return folded
