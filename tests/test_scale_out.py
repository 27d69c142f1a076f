"""Several workers share the partitions; when one stops mid-stream the other takes over exactly."""

from __future__ import annotations

import asyncio
import random

import pytest

from lo_stream.topics import ensure_topics
from tests.support import (
    ServiceProcess,
    assigned_partitions,
    envelope,
    expected_counts,
    free_port,
    produce,
    wait_for_table,
)

pytestmark = pytest.mark.kafka

EVENT_COUNT = "lo_stream.writing.event_count-v1"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_two_workers_split_the_work_and_one_takes_over(settings, tmp_path, guarantee):
    settings = settings.model_copy(update={"processing_guarantee": guarantee})
    await ensure_topics(settings)
    second_settings = settings.model_copy(update={"data_dir": tmp_path / "second", "worker_port": free_port()})
    first = ServiceProcess(settings, tmp_path / "first.log").start()
    second = ServiceProcess(second_settings, tmp_path / "second.log").start()
    rng = random.Random(3)
    produced: list[tuple[str, int]] = []

    async def stream_events(batches: int) -> None:
        for _ in range(batches):
            students = [f"s{rng.randrange(80):03d}" for _ in range(200)]
            produced.extend(await produce(settings, [(s, envelope(s, event="keystroke")) for s in students]))
            await asyncio.sleep(0.2)

    try:
        # The partitions of the events topic are shared between the two workers.
        for _ in range(120):
            if assigned_partitions(first, settings) and assigned_partitions(second, settings):
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"the workers did not share the partitions:\n{first.log_tail()}\n{second.log_tail()}")
        await stream_events(10)
        await wait_for_table(settings, EVENT_COUNT, expected_counts(produced), first)

        # Stop one worker while events keep coming; the other takes its partitions over.
        producing = asyncio.create_task(stream_events(15))
        await asyncio.sleep(1.0)
        assert first.stop() == 0, first.log_tail()
        await producing
        await wait_for_table(settings, EVENT_COUNT, expected_counts(produced), second, timeout=180)
    finally:
        for worker in (first, second):
            if worker.process and worker.process.poll() is None:
                worker.stop()
    assert len(produced) == 5000
