"""The floor: a plain aiokafka ``getmany`` loop running the workshop reducer with state in rocksdict.

    python bench/raw_loop.py --broker HOST:PORT --topic T --group G --state-dir DIR [--commit-interval 1]

Per message: orjson-decode it (one envelope or a list of one student's), read the student's
state once, fold every envelope in, write the state once (JSON bytes). Offsets are committed
every --commit-interval seconds, after the states they cover were written. No changelog, no
dead letters, no exactly-once: the least any Kafka + RocksDB program doing this work must
spend. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from rocksdict import Options, Rdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import competitor_parser  # noqa: E402
from bench.workshop import NULL_STATE, workshop  # noqa: E402


async def run(broker: str, topic: str, group: str, state_dir: Path, commit_interval: float) -> None:
    state = Rdict(str(state_dir), Options(raw_mode=True))
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
    )
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await consumer.start()
    last_commit, uncommitted = time.monotonic(), False
    try:
        while not stopping.is_set():
            for records in (await consumer.getmany(timeout_ms=100, max_records=1000)).values():
                for record in records:
                    decoded = orjson.loads(record.value)
                    stored = state.get(record.key)
                    student = orjson.loads(stored) if stored is not None else NULL_STATE
                    for envelope in decoded if isinstance(decoded, list) else (decoded,):
                        student = workshop(envelope, student)
                    state[record.key] = orjson.dumps(student)
                    uncommitted = True
            if uncommitted and time.monotonic() - last_commit >= commit_interval:
                await consumer.commit()
                last_commit, uncommitted = time.monotonic(), False
    finally:
        if uncommitted:
            await consumer.commit()
        await consumer.stop()
        state.close()


def main() -> None:
    parser = competitor_parser(__doc__.split("\n")[0])
    args = parser.parse_args()
    asyncio.run(run(args.broker, args.topic, args.group, args.state_dir, args.commit_interval))


if __name__ == "__main__":
    main()
