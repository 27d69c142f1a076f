"""Log files into the events topic: ``lo-stream replay-file PATH [--rate N]``.

Responsibilities:

1. read JSON lines of envelopes, of raw events (given an identity with ``--user``), or Learning
   Observer's ``.study.log`` lines (an envelope, a tab, a timestamp);
2. store them in the events topic in file order per student, packing consecutive events of one
   student into one message when not paced;
3. pace them at ``rate`` events per second when asked (default: as fast as the broker takes them);
4. report bad lines with their line numbers and dead-letter them; a bad line never stops the rest.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from lo_stream.connectors.producer import EventProducer
from lo_stream.envelopes import BadLine, Identity, parse_log_line
from lo_stream.settings import Settings

__all__ = ["ReplaySummary", "count_lines", "replay_file"]

LOG_PROVIDENCE = "log"
MAX_RUN_EVENTS = 500  # events of one student packed into one message, at most


@dataclass
class ReplaySummary:
    events: int = 0
    messages: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


async def replay_file(
    settings: Settings,
    path: Path,
    *,
    rate: float | None = None,
    user: str | None = None,
    on_progress: Callable[[int], None] = lambda events: None,
) -> ReplaySummary:
    """Store the events of `path` in the events topic; `on_progress` gets the count of events
    handed over so far. Returns once the broker has every one of them."""
    identity = Identity.of(user, LOG_PROVIDENCE) if user else None
    summary = ReplaySummary()
    started = time.monotonic()
    run_student: str | None = None
    run: list[dict] = []
    pending: list[asyncio.Future] = []

    async with EventProducer(settings) as producer:

        async def flush_run() -> None:
            nonlocal run
            if run:
                pending.extend(await producer.queue_envelopes(run_student, run))
                summary.events += len(run)
                on_progress(summary.events)
                run = []

        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    student, envelope = parse_log_line(line.rstrip(b"\r\n"), identity, "lo_stream.replay-file")
                except BadLine as exc:
                    summary.bad_lines.append((number, str(exc)))
                    await producer.send_dead_letter(
                        f"bad log line: {exc}", line.rstrip(b"\r\n"), stage="replay-file", file=str(path), line=number
                    )
                    continue
                if rate:
                    # Paced: each event leaves on its own at its due time.
                    due = started + (summary.events + len(run)) / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    run_student, run = student, [envelope]
                    await flush_run()
                    continue
                if student != run_student or len(run) >= MAX_RUN_EVENTS:
                    await flush_run()
                    run_student = student
                run.append(envelope)
        await flush_run()
        summary.messages = len(pending)
        await asyncio.gather(*pending)
    summary.seconds = time.monotonic() - started
    return summary
