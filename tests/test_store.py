"""A table partition's store: the values it wrote last answer reads from memory, bounded, and every
read equals what RocksDB holds, whatever the writes, deletes and wipes before it."""

from __future__ import annotations

import random
import tracemalloc

from lo_stream.tables import encode_entry
from lo_stream.tables.store import KEPT_VALUE_OVERHEAD, PartitionStore, StoreMemory

GENERATION = 2_000  # bytes of values kept per generation, so that a few writes fill one


def open_store(path) -> PartitionStore:
    memory = StoreMemory(1 << 20, 2, 1 << 20, recent_bytes=GENERATION)
    return PartitionStore(path / "table-0.db", memory.options(), memory.recent_bytes)


def test_every_read_equals_rocksdb_whatever_came_before(tmp_path):
    rng = random.Random(7)
    store = open_store(tmp_path)
    keys = [f"s{i}" for i in range(30)]
    model: dict[str, bytes | None] = {}
    for step in range(500):
        values: dict[str, bytes | None] = {}
        for key in rng.sample(keys, rng.randint(1, 12)):
            size = rng.choice((0, 40, 300, 2 * GENERATION))  # the last: larger than a generation
            values[key] = None if rng.random() < 0.15 else encode_entry({"step": step, "pad": "x" * size})
        store.write(values, checkpoint=step)
        model.update(values)
        if rng.random() < 0.03:  # the changelog was recreated: the store starts again
            store.wipe()
            model.clear()
        for key in keys:
            assert store.get(key) == model.get(key) == store.db.get(key.encode()), (step, key)
    assert store.checkpoint == 499 or store.checkpoint is None
    store.close()


def answered_from_memory(store: PartitionStore, key: str) -> bool:
    """Whether the store answers `key` without RocksDB: delete it there behind the store's back."""
    value = store.get(key)
    store.db.delete(key.encode())
    kept = store.get(key) == value is not None
    store.db[key.encode()] = value
    return kept


def test_the_values_written_last_are_read_from_memory_within_two_generations(tmp_path):
    store = open_store(tmp_path)
    value = encode_entry({"state": {"count": 1}})
    per_write = (len(value) + KEPT_VALUE_OVERHEAD) * 3
    store.write({"a": value, "b": value, "c": value}, checkpoint=0)
    assert answered_from_memory(store, "a")
    writes = 2 * GENERATION // per_write + 1  # other keys, two generations' worth and more
    for write in range(writes):
        store.write({f"k{write}-{n}": value for n in range(3)}, checkpoint=write + 1)
    assert not answered_from_memory(store, "a")  # the oldest generation was let go
    assert answered_from_memory(store, f"k{writes - 1}-0")
    store.write({"big": encode_entry({"pad": "x" * GENERATION})}, checkpoint=writes + 1)
    assert not answered_from_memory(store, f"k{writes - 1}-0")  # a write beyond a generation keeps nothing
    assert not answered_from_memory(store, "big")
    assert store.get("big") is not None
    store.close()


def test_an_encoded_entry_holds_no_more_memory_than_its_length():
    entry = {"state": {"count": 1}, "partition": 0, "offset": 7, "applied": {"0": [7, 0]}}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        value = encode_entry(entry)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert value == b'{"state":{"count":1},"partition":0,"offset":7,"applied":{"0":[7,0]}}'
    assert held < len(value) + 100  # a bytes object's header, not orjson's 4 KB buffer
