"""Throughput: the same pre-produced events drained by the raw loop, lo_stream, Quix Streams and Kafka Streams.

    python -m bench.throughput --students 10000 --events 100000 [--per-message 1] \
        [--competitors raw,lo_stream,quix,kstreams] [--guarantee at_least_once] [--modules workshop]

Each competitor is a process of its own with a fresh consumer group and fresh state: the raw
loop (`bench/raw_loop.py`), the Quix Streams app (`bench/quix_app.py`) and the Kafka Streams app
(`bench/kstreams_app.py`, which execs a JVM; its jar is built before the run, not timed) read the
dataset's topic; lo_stream's worker reads a byte-for-byte copy of it named as its settings want
(copied before the worker starts, not timed). Figures are in events/s between the first and the
final offset commit of the competitor's consumer group (see `bench.harness.drain`). Kafka Streams
is skipped, and recorded as skipped, where java 17+ or (to build it) mvn is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from bench import kstreams_app
from bench.harness import (
    COMMIT_INTERVAL_S,
    Dataset,
    bench_settings,
    copy_topic,
    delete_topics,
    drain,
    environment,
    kafka,
    produce_dataset,
    ratio,
    worker_env,
)
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess

__all__ = ["COMPETITORS", "run_competitor", "throughput_ratios"]

COMPETITORS = ("raw", "lo_stream", "quix", "kstreams")
BENCH = Path(__file__).resolve().parent
SCRIPTS = {"raw": BENCH / "raw_loop.py", "quix": BENCH / "quix_app.py", "kstreams": BENCH / "kstreams_app.py"}


async def run_competitor(
    competitor: str, dataset: Dataset, broker: str, work: Path, *,
    guarantee: str = "at_least_once", modules: str = "workshop",
) -> dict:
    """Drain `dataset` with one competitor; return its figures with what was run.

    `modules` (lo_stream only) names the lo_stream modules the worker runs: ``workshop`` (the
    workload every competitor runs) or ``writing`` (lo_stream's own module, five reducers).

    Kafka Streams where it cannot run (see `bench.kstreams_app.unavailable`): the figures are
    replaced by ``skipped`` (why), and a message says so on stderr."""
    about = {
        "competitor": competitor,
        "workload": modules if competitor == "lo_stream" else "workshop",
        "guarantee": guarantee,
        "students": dataset.students,
        "events": dataset.events,
        "events_per_message": dataset.per_message,
    }
    if competitor == "kstreams":
        reason = kstreams_app.unavailable()
        if reason:
            print(f"kstreams skipped: {reason}", file=sys.stderr, flush=True)
            return {**about, "skipped": reason}
        kstreams_app.build()  # before the timed run
        about["versions"] = kstreams_app.versions()
    if competitor == "lo_stream":
        settings = bench_settings(
            broker, work, f"lo-{modules}", modules=modules, partitions=dataset.partitions,
            processing_guarantee=guarantee,
        )
        await ensure_topics(settings)
        await copy_topic(broker, dataset, settings.topics.events)
        process = ServiceProcess(settings, work / f"{settings.topic_prefix}.log", env=worker_env(work))
        topic = settings.topics.events
    elif competitor in SCRIPTS:
        if competitor == "raw" and guarantee != "at_least_once":
            raise ValueError("the raw loop is at-least-once only (it keeps no state in Kafka to make exact)")
        settings = bench_settings(broker, work, competitor)
        command = (
            str(SCRIPTS[competitor]), "--broker", broker, "--topic", dataset.topic, "--group", settings.app_id,
            "--state-dir", str(settings.data_dir / "state"), "--commit-interval", str(COMMIT_INTERVAL_S),
        )
        if competitor in ("quix", "kstreams"):
            command += ("--guarantee", guarantee.replace("_", "-"))
        settings.data_dir.mkdir(parents=True)
        process = ServiceProcess(settings, work / f"{settings.topic_prefix}.log", command=command)
        topic = dataset.topic
    else:
        raise ValueError(f"unknown competitor {competitor!r}: choose from {', '.join(COMPETITORS)}")
    try:
        drained = await drain(process, settings.app_id, topic, dataset)
    finally:  # its state and its topics (figures are taken; its log stays in `work`)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
        await delete_topics(broker, settings.topic_prefix)
    return {**about, **drained.as_dict()}


def throughput_ratios(runs: list[dict]) -> list[dict]:
    """Per data shape and guarantee, from the same run: lo_stream, Quix and Kafka Streams over the
    raw loop (at-least-once only: exactly-once runs are set against its at-least-once run), and
    lo_stream over Quix and over Kafka Streams; in events/s and in events per CPU-second (steadier
    on a shared machine, and for short runs). A row for each shape and guarantee that has a run
    besides the raw loop's; None where either side is missing. Skipped runs count as missing.

    >>> runs = [{"competitor": c, "workload": "workshop", "events_per_message": 1, "guarantee": "at_least_once",
    ...          "events_per_s": s, "events_per_cpu_s": s / 2} for c, s in (("raw", 100.0), ("kstreams", 50.0))]
    >>> row = throughput_ratios(runs)[0]
    >>> row["kstreams_over_raw"], row["per_cpu_kstreams_over_raw"], row["lo_stream_over_raw"]
    (0.5, 0.5, None)
    """
    measured = [r for r in runs if r["workload"] == "workshop" and not r.get("skipped")]

    def rate(competitor: str, per_message: int, guarantee: str, figure: str) -> float | None:
        if competitor == "raw":
            guarantee = "at_least_once"
        return next((r[figure] for r in measured if r["competitor"] == competitor
                     and r["events_per_message"] == per_message and r["guarantee"] == guarantee), None)

    ratios = []
    for per_message in sorted({r["events_per_message"] for r in measured}):
        for guarantee in ("at_least_once", "exactly_once"):
            if not any(r["competitor"] != "raw" and r["events_per_message"] == per_message
                       and r["guarantee"] == guarantee for r in measured):
                continue
            row: dict = {"events_per_message": per_message, "guarantee": guarantee}
            for prefix, figure in (("", "events_per_s"), ("per_cpu_", "events_per_cpu_s")):
                pairs = [("lo_stream", "raw"), ("lo_stream", "quix"), ("lo_stream", "kstreams"),
                         ("quix", "raw"), ("kstreams", "raw")]
                for numerator, denominator in pairs:
                    row[f"{prefix}{numerator}_over_{denominator}"] = ratio(
                        rate(numerator, per_message, guarantee, figure), rate(denominator, per_message, guarantee, figure))
            ratios.append(row)
    return ratios


async def compare(broker: str, work: Path, args: argparse.Namespace) -> list[dict]:
    dataset = await produce_dataset(broker, args.students, args.events, args.per_message, args.partitions)
    results = []
    for competitor in args.competitors.split(","):
        result = await run_competitor(competitor, dataset, broker, work, guarantee=args.guarantee, modules=args.modules)
        print(orjson.dumps(result).decode(), flush=True)
        results.append(result)
    await delete_topics(broker, dataset.topic)
    for row in throughput_ratios(results):
        print(orjson.dumps({"ratios": row}).decode(), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=1, help="envelopes per message (1: one event per message)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--competitors", default=",".join(COMPETITORS), help=f"comma-separated, from {', '.join(COMPETITORS)}")
    parser.add_argument("--guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once")
    parser.add_argument("--modules", default="workshop", help="lo_stream's modules: workshop or writing")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="lo-bench-"))
    with kafka(work) as broker:
        print(orjson.dumps(environment(broker)).decode())
        asyncio.run(compare(broker, work, args))


if __name__ == "__main__":
    main()
