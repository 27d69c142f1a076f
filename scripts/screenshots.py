"""The dashboards' screenshots in README.md and docs/dashboards.md, from a real class.

    make screenshots            # or: python scripts/screenshots.py [--students 12] [--minutes 3]

Brings up what `make run` brings up (`lo-stream run`: Kafka unless LO_STREAM_BROKER is set, a
worker, the gateway, the dashboards and a simulated class typing through the gateway), on ports
and a data directory of its own, lets the class write for a few minutes, signs in as the
development teacher in Debian's Chromium and saves each page to docs/images/. Then it stops
everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import free_port, free_port_pair  # noqa: E402

IMAGES = REPO / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
LOGIN = re.compile(r"dashboard: (http://\S+)/overview\s+\(sign in as (\S+) / (\S+)\)")


def start_class(students: int, work: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "LO_STREAM_DATA_DIR": str(work), "LO_STREAM_TOPIC_PREFIX": f"shots{int(time.time())}",
           "LO_STREAM_DASHBOARD_PORT": str(free_port()), "LO_STREAM_WORKER_PORT": str(free_port()),
           "LO_STREAM_GATEWAY_PORT": str(free_port()), "LO_STREAM_KAFKA_PORT": str(free_port_pair())}
    log = work / "run.log"
    with open(log, "wb") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([sys.executable, "-m", "lo_stream", "run", "--students", str(students)],
                                   stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return process, log


def wait_for_login(process: subprocess.Popen, log: Path, timeout: float = 600) -> tuple[str, str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LOGIN.search(log.read_text(errors="replace"))
        if found:
            return found.group(1), found.group(2), found.group(3)
        if process.poll() is not None:
            raise SystemExit(f"lo-stream run stopped:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    raise SystemExit(f"lo-stream run did not print its dashboard within {timeout:g}s:\n{log.read_text()[-3000:]}")


async def shoot(base: str, user: str, password: str) -> list[Path]:
    from playwright.async_api import async_playwright, expect

    saved = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = await (await browser.new_context(viewport={"width": 1280, "height": 860})).new_page()

        async def save(name: str) -> None:
            await asyncio.sleep(3)  # let live updates and plots settle
            path = IMAGES / f"{name}.png"
            await page.screenshot(path=str(path), full_page=True)
            saved.append(path)

        await page.goto(f"{base}/login")
        await save("login")
        await page.get_by_label("Name").fill(user)
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Sign in").click()
        await page.goto(f"{base}/overview")
        cards = page.locator("article.lo-card")
        await expect(cards.first).to_be_visible(timeout=60_000)
        await save("course-overview")
        await page.get_by_role("button", name="Table").click()
        await expect(page.locator("tbody tr").first).to_be_visible(timeout=30_000)
        await save("course-table")
        await page.get_by_role("button", name="Cards").click()
        await cards.first.get_by_role("link").click()
        moment = page.get_by_label("Moment of the session shown (edits)")
        await expect(moment).to_be_visible(timeout=60_000)
        await moment.focus()
        await page.keyboard.press("Home")
        for _ in range(6):  # a moment mid-session, as a teacher replaying the essay would pick
            await page.keyboard.press("PageUp")
        await save("student")
        await page.get_by_role("navigation", name="Dashboards").get_by_role("link", name="Class view").click()
        await expect(page.get_by_role("group", name="The class now")).to_be_visible(timeout=30_000)
        await save("class-view")
        await browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=12)
    parser.add_argument("--minutes", type=float, default=6,
                        help="how long the class writes first (students take breaks after a few minutes)")
    args = parser.parse_args()
    IMAGES.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lo-screenshots-"))
    process, log = start_class(args.students, work)
    try:
        base, user, password = wait_for_login(process, log)
        print(f"the class writes for {args.minutes:g} min ({base}) ...", flush=True)
        time.sleep(args.minutes * 60)
        for path in asyncio.run(shoot(base, user, password)):
            print(f"saved {path.relative_to(REPO)}")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
