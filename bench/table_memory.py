"""Memory and speed of the tables' RocksDB stores: the options Faust used against lo_stream's.

    python -m bench.table_memory [--tables 5] [--partitions 4] [--writes 6000000] [--keys 10000]

A worker holds one RocksDB per table per partition. Each configuration runs in a fresh process
that opens ``tables × partitions`` rocksdict stores with the given memory bounds
(`lo_stream.tables.store.StoreMemory`; Faust's: 3 write buffers of 64 MB, a 2 GB block cache) and, like a reducer, reads a student's value and writes it back changed, ``--writes``
times over ``--keys`` students spread across the partitions (the writing module on 4 partitions:
5 × 4 stores). Figures: the process's peak RSS and writes per second; ratios lo_stream / Faust.
No Kafka is involved: this isolates what the store options cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from bench.harness import environment, ratio, save_result, student_name
from lo_stream.settings import load_settings
from lo_stream.tables.store import MB, StoreMemory

__all__ = ["measure"]


FAUST_DEFAULTS = StoreMemory(64 * MB, 3, 2048 * MB)


def _fill(options: dict, tables: int, partitions: int, writes: int, keys: int, directory: str) -> dict:
    """In this process: open the stores, read-modify-write `writes` times, report peak RSS and rate."""
    from rocksdict import Rdict

    store_options = StoreMemory(**options).options()
    stores = [Rdict(str(Path(directory) / f"table-{t}-partition-{p}.db"), store_options)
              for t in range(tables) for p in range(partitions)]
    process = psutil.Process()
    peak = process.memory_info().rss
    started = time.perf_counter()
    for write in range(writes):  # an event updates its student in every table, like the reducers
        event, table = divmod(write, tables)
        student = event % keys
        partition = student % partitions
        store = stores[table * partitions + partition]
        key = student_name(student).encode()
        previous = store.get(key)
        count = orjson.loads(previous)["state"]["count"] + 1 if previous else 1
        store[key] = orjson.dumps({
            "state": {"count": count, "median_interval_ms": 37.0, "last": list(range(event, event + 10)),
                      "doc": "a line of text being typed " * 12},
            "partition": partition, "offset": event, "applied": {str(partition): [event, 0]},
        })
        if write % 10_000 == 0:
            peak = max(peak, process.memory_info().rss)
    elapsed = time.perf_counter() - started
    peak = max(peak, process.memory_info().rss)
    for store in stores:
        store.close()
    return {"writes_per_s": round(writes / elapsed), "peak_rss_mb": round(peak / 2**20, 1), "seconds": round(elapsed, 1)}


def measure(tables: int, partitions: int, writes: int, keys: int) -> dict:
    configurations = {"faust_defaults": FAUST_DEFAULTS._asdict(), "lo_stream": StoreMemory.of(load_settings())._asdict()}
    runs = {}
    for name, options in configurations.items():
        with tempfile.TemporaryDirectory(prefix="lo-bench-rocksdb-") as directory:
            code = ("import json, sys; from bench.table_memory import _fill; "
                    "print(json.dumps(_fill(*json.loads(sys.argv[1]))))")
            arguments = json.dumps([options, tables, partitions, writes, keys, directory])
            done = subprocess.run([sys.executable, "-c", code, arguments], capture_output=True, text=True, check=True)
            runs[name] = {"options": options, **json.loads(done.stdout)}
    return {
        "tables": tables, "partitions": partitions, "writes": writes, "keys": keys, "runs": runs,
        "peak_rss_lo_stream_over_faust": ratio(runs["lo_stream"]["peak_rss_mb"], runs["faust_defaults"]["peak_rss_mb"]),
        "writes_per_s_lo_stream_over_faust": ratio(runs["lo_stream"]["writes_per_s"],
                                                   runs["faust_defaults"]["writes_per_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--writes", type=int, default=6_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args()
    about = {key: value for key, value in environment("").items() if key != "broker"}
    result = {**about, **measure(args.tables, args.partitions, args.writes, args.keys)}
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    print(f"saved {save_result('table_memory', result)}")


if __name__ == "__main__":
    main()
