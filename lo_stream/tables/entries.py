"""Folding events into table entries: the one piece of logic the worker and offline mode share.

An entry is what a reducer's table holds for one key (see `lo_stream.tables`)::

    {"state": ..., "partition": p, "offset": o, "applied": {"<p>": [offset, index in batch]}}

`fold` applies a message's items to the entries of their keys, skipping events at or before a
key's ``applied`` mark (re-deliveries), so that the same events always give the same tables,
whether they come from Kafka (`lo_stream.agents`) or from a list (`lo_stream.offline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

from lo_stream.reducers import Reducer

__all__ = ["Failure", "Folded", "Item", "fold", "items_for"]


class Item(NamedTuple):
    """One envelope for one reducer key, with where it came from on the events topic."""

    key: str
    envelope: dict
    partition: str  # a str: JSON object keys in the stored table value are strings
    offset: int
    index: int  # position in a batch message


def items_for(reducer: Reducer, envelopes: list[dict], partition: int, offset: int) -> list[Item]:
    """The items of one message a reducer wants, each under the key of its scope."""
    return [
        Item(key, envelope, str(partition), offset, index)
        for index, envelope in enumerate(envelopes)
        if reducer.wants(envelope) and (key := reducer.key(envelope)) is not None
    ]


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
    """Apply items in order to the current entries (`entry_of(key)`); return the new entries by key."""
    folded = Folded()
    changed = folded.changed
    for item in items:
        entry = changed.get(item.key) or entry_of(item.key)
        applied = entry["applied"] if entry else {}
        done = applied.get(item.partition)
        if done is not None and [item.offset, item.index] <= done:
            folded.redelivered += 1
            continue  # applied before a restart, a rebalance or a rewind
        state: Any = entry["state"] if entry else reducer.initial_state()
        try:
            state = await reducer.apply(item.envelope, state)
        except Exception as exc:  # a researcher's function: its failure must not stop the stream
            folded.failures.append(Failure(item, f"{type(exc).__name__}: {exc}"))
            continue
        folded.applied += 1
        changed[item.key] = {
            "state": state,
            "offset": item.offset,
            "partition": int(item.partition),
            "applied": {**applied, item.partition: [item.offset, item.index]},
        }
    return folded
