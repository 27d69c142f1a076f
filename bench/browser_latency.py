"""How long from an event being produced to a teacher's browser showing it on the student's card.

    python bench/browser_latency.py [--rate 100] [--seconds 20] [--students 30]

The whole stack on the real broker: a `lo-stream worker` (with the query API), `lo-stream
dashboard`, Debian's Chromium (Playwright) signed in as the course's teacher on the course
overview (student cards). Keystrokes for the course's students are produced at a steady rate; a
script in the page records (every 10 ms) when each student's card changes its event count (the
card's ``data-events``). A change to count n is matched to the send time of that student's n-th
event: latency = shown - sent (same machine, same clock). The dashboard coalesces bursts (one
update may carry several events), so the figures are per update the teacher sees. Also measured:
the CPU the dashboard server spends on the one open session (cores, over the sending). Prints and
saves p50/p90/p99/max to bench/results/browser_latency-<rate>-<students>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import bench_settings, environment, kafka, percentiles, save_result  # noqa: E402
from lo_stream.connectors.rosters import roster_student, write_course  # noqa: E402
from lo_stream.query.access import UserStore  # noqa: E402
from lo_stream.topics import ensure_topics  # noqa: E402
from tests.support import ServiceProcess, envelope, free_port  # noqa: E402
from tests.test_dashboards import CHROMIUM, CHROMIUM_ARGS, DASHBOARD, sign_in  # noqa: E402

COURSE = "bench-class"
# Every change of a card's event count, with its student, stamped with the page's clock; polled
# every 10 ms (a MutationObserver does not see into Panel's shadow roots).
OBSERVER = """() => {
  window.__changes = [];
  const seen = new Map();
  // Panel renders into shadow roots, which document.querySelectorAll does not enter.
  const cards = (root, found) => {
    for (const element of root.querySelectorAll('*')) {
      if (element.classList.contains('lo-card')) found.push(element);
      if (element.shadowRoot) cards(element.shadowRoot, found);
    }
    return found;
  };
  const scan = () => {
    for (const card of cards(document, [])) {
      const student = card.dataset.student, value = parseInt(card.dataset.events, 10);
      if (seen.get(student) !== value) {
        seen.set(student, value);
        window.__changes.push([student, value, Date.now()]);
      }
    }
  };
  scan();
  setInterval(scan, 10);
}"""


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(settings, rate: float, seconds: float, students: int, work: Path) -> tuple[list[float], int, float]:
    from playwright.async_api import async_playwright, expect

    await ensure_topics(settings)
    UserStore(settings.users_file).add("teacher", "teacher", password="bench-pw")
    await write_course(settings, {"course_id": COURSE, "name": "Bench", "teachers": ["teacher"]},
                       [roster_student(f"s{i}", f"Student{i:03d}", "Bench") for i in range(students)])
    worker = ServiceProcess(settings, work / "worker.log").start()
    dashboard = ServiceProcess(settings, work / "dashboard.log", DASHBOARD).start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=0)
    await producer.start()
    sent: dict[tuple[str, int], float] = {}
    try:
        await dashboard.wait_until_serving(f"http://127.0.0.1:{settings.dashboard_port}/login", timeout=120)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = await sign_in(browser, settings, "teacher", "bench-pw")
            await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course={COURSE}")
            await expect(page.locator(f'article.lo-card[data-student="s{students - 1}"]')).to_be_attached(timeout=120_000)
            await page.evaluate(OBSERVER)

            total, last = int(rate * seconds), {}
            cpu_before, started = cpu_seconds(dashboard.process.pid), time.monotonic()
            for i in range(total):
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                student = f"s{i % students}"
                count = i // students + 1
                now = time.time() * 1000
                event = envelope(student, event="keystroke", timestamp=now)
                await producer.send(settings.topics.events, key=student.encode(), value=orjson.dumps(event))
                sent[(student, count)] = now
                last[student] = count
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                shown = {name: value for name, value, _ in await page.evaluate("window.__changes")}
                if all(shown.get(name) == count for name, count in last.items()):
                    break
                await asyncio.sleep(0.5)
            cores = (cpu_seconds(dashboard.process.pid) - cpu_before) / (time.monotonic() - started)
            changes = await page.evaluate("window.__changes")
            await browser.close()
    finally:
        await producer.stop()
        dashboard.stop()
        worker.stop()
    latencies = [at - sent[(name, value)] for name, value, at in changes if (name, value) in sent]
    return latencies, len(sent), cores


def run(rate: float, seconds: float, students: int) -> dict:
    """Measure on a broker of its own (LO_STREAM_BROKER, or an embedded one); save and return the result."""
    work = Path(tempfile.mkdtemp(prefix="lo-bench-browser-"))
    with kafka(work) as broker:
        settings = bench_settings(broker, work, "browser", dashboard_port=free_port())
        latencies, events, cores = asyncio.run(measure(settings, rate, seconds, students, work))
        result = {
            "benchmark": "browser_latency",
            **environment(broker),
            "rate_events_per_s": rate,
            "students": students,
            "events": events,
            "updates_seen": len(latencies),
            "latency_ms": percentiles(latencies),
            "dashboard_cpu_cores_per_session": round(cores, 3),  # one open session, while events arrived
        }
    save_result(f"browser_latency-{rate:g}-{students}", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="events per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--students", type=int, default=30)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "topic not found" until the worker makes it
    print(orjson.dumps(run(args.rate, args.seconds, args.students), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
