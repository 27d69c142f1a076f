"""``make bench``: every benchmark in one run, quick by default.

    python -m bench [--full] [--only throughput,scale,latency,gateway,browser,soak]

1. throughput at 10k students, one event per message and packed (10 per message): raw loop,
   lo_stream, Quix Streams and Kafka Streams on the workshop reducer, and lo_stream on its writing
   module; at-least-once, then exactly-once (lo_stream, Quix, Kafka Streams). Kafka Streams is
   recorded as skipped where java 17+ or mvn is missing;
2. scale: students from 1k up (one event per message), every competitor: throughput, peak RSS and
   how flat each one's events per CPU-second stay across S;
3. latency: steady 1k and 10k events/s through the gateway to a live query subscriber;
4. the gateway's acknowledged events/s;
5. browser: events produced at a steady rate to a teacher's Chromium showing them on the course
   overview (worker, query layer, dashboard server, browser);
6. soak: steady traffic through the gateway with 1% hostile frames (1 minute, 10 in full mode):
   every good event stored and counted once, every hostile frame refused, memory flat.

Saves ``bench/results/<section>-<mode>.json`` and prints the tables of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench import browser_latency, change_feed_latency, gateway_throughput, soak
from bench.harness import bench_settings, delete_topics, environment, kafka, produce_dataset, ratio, save_result
from bench.throughput import COMPETITORS, run_competitor, throughput_ratios
from tests.support import free_port

MODES = {
    # writing_single: events of lo_stream's writing module (five reducers) on one event per message.
    "quick": {"single_events": 20_000, "packed_events": 100_000, "students": (1_000, 10_000, 100_000),
              "writing_single": 20_000, "latency_seconds": {1_000: 5, 10_000: 2}, "gateway_seconds": 8,
              "browser": {(100, 30): 20}, "soak_seconds": 60},
    "full": {"single_events": 1_000_000, "packed_events": 1_000_000, "students": (1_000, 10_000, 100_000, 1_000_000),
             "writing_single": 500_000, "latency_seconds": {1_000: 30, 10_000: 20}, "gateway_seconds": 30,
             "browser": {(100, 30): 30, (1_000, 200): 30}, "soak_seconds": 600},
}
SECTIONS = ("throughput", "scale", "latency", "gateway", "browser", "soak")
STUDENTS = 10_000  # of the throughput comparison
PACKED = 10  # events per message when packed
PARTITIONS = 4
console = Console()


async def throughput(broker: str, work: Path, mode: dict, progress: Progress) -> dict:
    runs = []
    workshop = [("raw", "at_least_once", "workshop"), ("lo_stream", "at_least_once", "workshop"),
                ("quix", "at_least_once", "workshop"), ("kstreams", "at_least_once", "workshop")]
    shapes = [(1, mode["single_events"], [*workshop, ("lo_stream", "exactly_once", "workshop")]),
              (PACKED, mode["packed_events"], [*workshop, ("lo_stream", "at_least_once", "writing"),
                                                ("lo_stream", "exactly_once", "workshop"),
                                                ("quix", "exactly_once", "workshop"),
                                                ("kstreams", "exactly_once", "workshop")])]
    if mode["writing_single"]:
        shapes.append((1, mode["writing_single"], [("lo_stream", "at_least_once", "writing")]))
    for per_message, events, plan in shapes:
        dataset = await produce_dataset(broker, STUDENTS, events, per_message, PARTITIONS)
        for competitor, guarantee, modules in plan:
            task = progress.add_task(f"{competitor} {modules} {guarantee} {dataset.label} S={STUDENTS:,}", total=None)
            runs.append(await run_competitor(competitor, dataset, broker, work, guarantee=guarantee, modules=modules))
            progress.remove_task(task)
        await delete_topics(broker, dataset.topic)
    return {"runs": runs, "ratios": throughput_ratios(runs)}


async def scale(broker: str, work: Path, mode: dict, progress: Progress, done: list[dict]) -> dict:
    """`done`: throughput runs; those of the same shape (e.g. at 10k students) are not run again."""
    runs = []
    for students in mode["students"]:
        dataset = None
        for competitor in COMPETITORS:
            same = [r for r in done if r["competitor"] == competitor and r["workload"] == "workshop"
                    and r["guarantee"] == "at_least_once" and r["events_per_message"] == 1
                    and (r["students"], r["events"]) == (students, mode["single_events"])]
            if same:
                runs.append(same[0])
                continue
            dataset = dataset or await produce_dataset(broker, students, mode["single_events"], 1, PARTITIONS)
            task = progress.add_task(f"{competitor} single S={students:,}", total=None)
            runs.append(await run_competitor(competitor, dataset, broker, work))
            progress.remove_task(task)
        if dataset is not None:
            await delete_topics(broker, dataset.topic)
    return {"runs": runs, "slowest_over_fastest": flatness(runs)}


def flatness(runs: list[dict]) -> dict[str, float | None]:
    """Each competitor's slowest / fastest events per CPU-second across the numbers of students
    (1.0: flat); competitors that were skipped are left out."""
    rates: dict[str, list[float]] = {}
    for run in runs:
        if not run.get("skipped"):
            rates.setdefault(run["competitor"], []).append(run["events_per_cpu_s"])
    return {competitor: ratio(min(r), max(r)) for competitor, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="1,000,000 events and up to 1M students (hours)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    args = parser.parse_args()
    sections = args.only.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}")
    label = "full" if args.full else "quick"
    mode = MODES[label]
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="lo-bench-"))
    console.print(f"[bold]lo_stream benchmarks ({label})[/bold]; logs in {work}")
    with kafka(work) as broker, Progress(console=console, transient=True) as progress:
        about = {**environment(broker), "mode": label}
        done: list[dict] = []
        if "throughput" in sections:
            result = {**about, **asyncio.run(throughput(broker, work, mode, progress))}
            done = result["runs"]
            console.print(f"saved {save_result(f'throughput-{label}', result)}")
        if "scale" in sections:
            result = {**about, **asyncio.run(scale(broker, work, mode, progress, done))}
            console.print(f"saved {save_result(f'scale-{label}', result)}")
        if "gateway" in sections:
            task = progress.add_task("gateway websocket throughput", total=None)
            settings = bench_settings(broker, work, "gateway", gateway_port=free_port(), gateway_insecure_identity=True)
            measured = asyncio.run(gateway_throughput.measure(settings, 50, mode["gateway_seconds"], 500, work))
            progress.remove_task(task)
            console.print(f"saved {save_result(f'gateway-{label}', {**about, 'gateway': measured})}")
    if "latency" in sections:  # each rate on a broker of its own (see change_feed_latency.run)
        for rate, seconds in mode["latency_seconds"].items():
            console.print(f"latency at {rate:,} events/s through the gateway ...")
            change_feed_latency.run("gateway", rate, seconds, 100)
    if "browser" in sections:
        for (rate, students), seconds in mode["browser"].items():  # (events/s, students in the class): s
            console.print(f"latency to the browser at {rate:,} events/s, {students} students ...")
            browser_latency.run(rate, seconds, students=students)
    if "soak" in sections:
        console.print(f"soak: {mode['soak_seconds']} s through the gateway, 1% hostile frames ...")
        soak.run(mode["soak_seconds"], rate=200, students=50, hostile_share=0.01)
    console.print("tables for docs/benchmarks.md: python -m bench.report")


if __name__ == "__main__":
    main()
