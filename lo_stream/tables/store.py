"""A worker's tables: a RocksDB database (rocksdict) per reducer version and partition.

Responsibilities:

1. open a store per partition this worker is assigned, close it when the partition leaves;
2. keep the entries written since the last commit apart (``pending``) until Kafka has acknowledged
   their changelog records, then write them to RocksDB in one write batch per partition, together
   with the offset of the last changelog record they hold (the store's checkpoint);
3. answer reads: the pending entry of a key if there is one, else the stored one, from the
   values the store wrote last if it is among them (`PartitionStore.reader`), else from RocksDB.

So a store never holds a value its changelog lacks: after a crash, restoring the changelog from
the checkpoint on (`lo_stream.tables.restore`) gives back exactly what was acknowledged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, NamedTuple

import orjson
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from lo_stream.reducers import Reducer
from lo_stream.settings import Settings
from lo_stream.tables import changelog_topic, key_partition

__all__ = ["PartitionStore", "StoreMemory", "Table"]

MB = 1024 * 1024
# Beside the keys (UTF-8 text, never starting with NUL): the last changelog offset the store holds.
CHECKPOINT_KEY = b"\x00lo_stream:changelog-offset"


class StoreMemory(NamedTuple):
    """The memory bounds of one table partition's store, from `settings.table_memory_mb`: two
    RocksDB write buffers of a quarter each, a block cache of three eighths, and the values written
    last kept for reads (`PartitionStore.reader`) in two generations of a sixteenth each. RocksDB's
    defaults as Faust set them (3 x 64 MB buffers, a 2 GB cache) took stores for 5 tables on 4
    partitions to 1.4 GB after 6M writes; bounds of 32 MB (then: write buffers and block cache of
    half each) to 0.6 GB, at the same speed (`bench/table_memory.py`)."""

    write_buffer_size: int
    max_write_buffer_number: int
    block_cache_size: int
    recent_bytes: int = 0  # of the values written last, per generation (0: none kept)

    @classmethod
    def of(cls, settings: Settings) -> "StoreMemory":
        budget = settings.table_memory_mb * MB
        return cls(budget // 4, 2, budget * 3 // 8, budget // 16)

    def options(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        table_options = BlockBasedOptions()
        table_options.set_block_cache(Cache(self.block_cache_size))
        # A key not in the store (every student's first event) is then found missing without
        # reading each file's blocks: with a million students, reads of missing keys went from
        # ~5 to ~1.7 us (keys arrive in no order, so every level-0 file may hold any of them).
        table_options.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table_options)
        return options


#: What a kept value costs beside its bytes (a dict slot and a bytes object), roughly.
KEPT_VALUE_OVERHEAD = 100
_ABSENT = object()


class PartitionStore:
    """One table partition's RocksDB database, its checkpoint, and the values it wrote last.

    A key's value read back from RocksDB soon after it was written costs a search of the write
    buffer's skip list, whose nodes have left the CPU's caches by then: with the 13 tables of the
    `writing` module that search was a tenth of the worker. So the store keeps the values of its
    last writes in two generations of at most `recent_bytes` each (the newer first; a write that
    would overflow the newer makes it the older and starts a new one), and answers reads from them
    when it can. Every value kept is the key's value in RocksDB: each write either lands in the
    newer generation or, larger than a generation, clears both."""

    def __init__(self, path: Path, options: Options, recent_bytes: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._options = options
        self.db = Rdict(str(path), options)
        self._recent_bytes = recent_bytes
        self._recent: dict[str, bytes | None] = {}  # None: deleted
        self._older: dict[str, bytes | None] = {}
        self._recent_size = 0

    @property
    def checkpoint(self) -> int | None:
        """Offset of the last changelog record the store holds, or None for a new store."""
        value = self.db.get(CHECKPOINT_KEY)
        return None if value is None else int(value)

    def get(self, key: str) -> bytes | None:
        return self.reader()(key)

    def reader(self) -> Callable[[str], bytes | None]:
        """`get`, with RocksDB's bound once (for the reads of one fold: no write comes between)."""
        stored = self.db.get

        def value(key: str) -> bytes | None:
            found = self._recent.get(key, _ABSENT)
            if found is _ABSENT:
                found = self._older.get(key, _ABSENT)
                if found is _ABSENT:
                    return stored(key.encode())
            return found  # type: ignore[return-value]

        return value

    def write(self, values: dict[str, bytes | None], checkpoint: int | None) -> None:
        """Write `values` by key (None deletes) and the checkpoint in one atomic batch."""
        batch = WriteBatch(raw_mode=True)
        for key, value in values.items():
            if value is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), value)
        if checkpoint is not None:
            batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        self.db.write(batch)
        self._keep(values)

    def _keep(self, written: dict[str, bytes | None]) -> None:
        """Keep the values just written for reads (see the class), within the generations' bound."""
        size = sum(map(len, filter(None, written.values()))) + KEPT_VALUE_OVERHEAD * len(written)
        if size > self._recent_bytes:  # none kept (and none left that this write made stale)
            self._forget()
            return
        if self._recent_size + size > self._recent_bytes:
            self._older, self._recent, self._recent_size = self._recent, {}, 0
        self._recent.update(written)
        self._recent_size += size

    def _forget(self) -> None:
        self._recent, self._older, self._recent_size = {}, {}, 0

    def wipe(self) -> None:
        """Delete every value: the changelog it was built from is gone."""
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._forget()
        self.db = Rdict(str(self.path), self._options)

    def close(self) -> None:
        self.db.close()


class Table:
    """One reducer version's table on this worker (see the module's docstring)."""

    def __init__(self, settings: Settings, reducer: Reducer, directory: Path) -> None:
        self.settings = settings
        self.reducer = reducer
        self.name = reducer.table_name
        self.changelog = changelog_topic(settings, reducer)
        self._directory = directory
        self._memory = StoreMemory.of(settings)
        self._options = self._memory.options()
        self.stores: dict[int, PartitionStore] = {}
        self.pending: dict[int, dict[str, bytes]] = {}

    def open(self, partition: int) -> PartitionStore:
        if partition not in self.stores:
            self.stores[partition] = PartitionStore(self._directory / f"{self.name}-{partition}.db", self._options,
                                                    self._memory.recent_bytes)
            self.pending[partition] = {}
        return self.stores[partition]

    def close(self, partition: int) -> None:
        store = self.stores.pop(partition, None)
        self.pending.pop(partition, None)
        if store is not None:
            store.close()

    def close_all(self) -> None:
        for partition in list(self.stores):
            self.close(partition)

    def entry(self, partition: int, key: str) -> dict | None:
        """The current entry of a key in a partition this worker holds (a fresh copy)."""
        return self.reader(partition)(key)

    def reader(self, partition: int) -> Callable[[str], dict | None]:
        """`entry` for one partition, its pending entries and its store looked up once (the engine
        reads a key of every reducer for every event)."""
        pending, stored = self.pending[partition].get, self.stores[partition].reader()
        loads = orjson.loads

        def entry(key: str) -> dict | None:
            value = pending(key)
            if value is None:
                value = stored(key)
            return None if value is None else loads(value)

        return entry

    def get(self, key: str) -> dict | None:
        """The entry of a key, or None when it has none or its partition is not held here."""
        partition = key_partition(self.settings, self.reducer, key)
        return self.entry(partition, key) if partition in self.stores else None

    def stage(self, partition: int, values: dict[str, bytes]) -> None:
        """New entries by key, readable at once, stored by the next `flush` (once their changelog
        records are acknowledged)."""
        self.pending[partition].update(values)

    def flush(self, checkpoints: dict[int, int]) -> None:
        """Store the pending entries of every partition, with the offsets of their changelog records."""
        for partition, pending in self.pending.items():
            checkpoint = checkpoints.get(partition)
            if pending or checkpoint is not None:
                self.stores[partition].write(pending, checkpoint)
                self.pending[partition] = {}

    def discard_pending(self) -> None:
        """Forget what was not stored: a failed commit goes back to the last one."""
        for pending in self.pending.values():
            pending.clear()
