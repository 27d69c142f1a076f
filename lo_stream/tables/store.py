"""A worker's tables: a RocksDB database (rocksdict) per reducer version and partition.

Responsibilities:

1. open a store per partition this worker is assigned, close it when the partition leaves;
2. keep the entries written since the last commit apart (``pending``) until Kafka has acknowledged
   their changelog records, then write them to RocksDB in one write batch per partition, together
   with the offset of the last changelog record they hold (the store's checkpoint);
3. answer reads: the pending entry of a key if there is one, else the stored one.

So a store never holds a value its changelog lacks: after a crash, restoring the changelog from
the checkpoint on (`lo_stream.tables.restore`) gives back exactly what was acknowledged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

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
    """The memory bounds of one table partition's RocksDB, from `settings.table_memory_mb`: two write
    buffers of a quarter each and a block cache of half. RocksDB's defaults as Faust set them
    (3 x 64 MB buffers, a 2 GB cache) took stores for 5 tables on 4 partitions to 1.4 GB after 6M
    writes, these to 0.6 GB at the same speed (`bench/table_memory.py`)."""

    write_buffer_size: int
    max_write_buffer_number: int
    block_cache_size: int

    @classmethod
    def of(cls, settings: Settings) -> "StoreMemory":
        budget = settings.table_memory_mb * MB
        return cls(budget // 4, 2, budget // 2)

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


class PartitionStore:
    """One table partition's RocksDB database and its checkpoint."""

    def __init__(self, path: Path, options: Options) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._options = options
        self.db = Rdict(str(path), options)

    @property
    def checkpoint(self) -> int | None:
        """Offset of the last changelog record the store holds, or None for a new store."""
        value = self.db.get(CHECKPOINT_KEY)
        return None if value is None else int(value)

    def get(self, key: str) -> bytes | None:
        return self.db.get(key.encode())

    def write(self, values: Iterable[tuple[bytes, bytes | None]], checkpoint: int | None) -> None:
        """Write `values` (encoded keys; None deletes) and the checkpoint in one atomic batch."""
        batch = WriteBatch(raw_mode=True)
        for key, value in values:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if checkpoint is not None:
            batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        self.db.write(batch)

    def wipe(self) -> None:
        """Delete every value: the changelog it was built from is gone."""
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)
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
        self._options = StoreMemory.of(settings).options()
        self.stores: dict[int, PartitionStore] = {}
        self.pending: dict[int, dict[str, bytes]] = {}

    def open(self, partition: int) -> PartitionStore:
        if partition not in self.stores:
            self.stores[partition] = PartitionStore(self._directory / f"{self.name}-{partition}.db", self._options)
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
        pending, stored = self.pending[partition].get, self.stores[partition].db.get
        loads = orjson.loads

        def entry(key: str) -> dict | None:
            value = pending(key)
            if value is None:
                value = stored(key.encode())
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
                self.stores[partition].write(((key.encode(), value) for key, value in pending.items()), checkpoint)
                pending.clear()

    def discard_pending(self) -> None:
        """Forget what was not stored: a failed commit goes back to the last one."""
        for pending in self.pending.values():
            pending.clear()
