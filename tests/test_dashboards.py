"""The teacher dashboards in a real browser (Debian's Chromium, driven by Playwright) against the
real stack: broker, worker with the query API, dashboard server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from lo_stream.connectors.rosters import roster_student, write_course
from lo_stream.query.access import UserStore
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, envelope, free_port, produce, wait_for_table

pytestmark = pytest.mark.kafka

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DASHBOARD = ("-m", "lo_stream", "dashboard")
SCREENSHOT = Path(__file__).parent.parent / "docs" / "images" / "course-overview.png"


def save(student: str, doc_id: str, timestamp: int, position: int, text: str) -> tuple[str, dict]:
    return student, envelope(student, event="google_docs_save", doc_id=doc_id, timestamp=timestamp,
                             bundles=[{"commands": [{"ty": "is", "ibi": position, "s": text}]}])


@pytest.fixture
async def stack(settings, tmp_path):
    """Broker, a worker and the dashboard server, with two teachers and their courses."""
    settings = settings.model_copy(update={"dashboard_port": free_port()})
    await ensure_topics(settings)
    users = UserStore(settings.users_file)
    users.add("ms.rivera", "teacher", password="rivera-pw")
    users.add("mr.chen", "teacher", password="chen-pw")
    users.add("root", "admin", password="root-pw")
    await write_course(settings, {"course_id": "alg-1", "name": "Algebra 1", "teachers": ["ms.rivera"]},
                       [roster_student("s1", "Ana", "Lima"), roster_student("s2", "Bilal", "Okafor"),
                        roster_student("s3", "Chen", "Wu")])
    await write_course(settings, {"course_id": "bio", "name": "Biology", "teachers": ["mr.chen"]},
                       [roster_student("b1", "Dara", "Kim")])
    await produce(settings, [save("s1", "essay", 1000, 1, "Hello"), save("s1", "essay", 1200, 6, " world")])
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    dashboard = ServiceProcess(settings, tmp_path / "dashboard.log", DASHBOARD).start()
    try:
        await wait_for_table(settings, "lo_stream.writing.event_count-v1", {"s1": 2}, worker,
                             project=lambda v: v["state"]["count"])
        await dashboard.wait_until_serving(f"http://127.0.0.1:{settings.dashboard_port}/login")
        yield settings, worker, dashboard
    finally:
        dashboard.stop()
        if worker.process.poll() is None:
            assert worker.stop() == 0, worker.log_tail()


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def sign_in(browser: Browser, settings, user: str, password: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit], input[type=submit]")
    await page.wait_for_load_state()
    return page


def cell(page: Page, student_name: str, column: str):
    """The cell of a column in the row of a student, in Tabulator's DOM."""
    row = page.locator(".tabulator-row", has_text=student_name)
    return row.locator(f'.tabulator-cell[tabulator-field="{column}"]')


async def status_as(settings, user: str | None, password: str = "") -> tuple[int, dict]:
    """The dashboard server's /lo_stream/status as `user` (signed in with the login form) or anonymously."""
    base = f"http://127.0.0.1:{settings.dashboard_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies for 127.0.0.1
        if user:
            async with http.post(f"{base}/login", data={"username": user, "password": password}) as signed:
                assert signed.status == 200 and "/login" not in str(signed.url)
        async with http.get(f"{base}/lo_stream/status") as response:
            return response.status, await response.json(content_type=None)


async def live_watchers(settings) -> dict:
    status, answer = await status_as(settings, "root", "root-pw")
    assert status == 200, answer
    return answer["live_courses"]


async def test_the_servers_status_is_for_admins_only(stack):
    settings, _, _ = stack
    assert await status_as(settings, None) == (
        401, {"error": "sign in (at /login) as an admin to see the dashboard server's status"})
    assert await status_as(settings, "ms.rivera", "rivera-pw") == (
        403, {"error": "ms.rivera is a teacher: the status is for admins"})
    assert await live_watchers(settings) == {}  # nobody watches a course yet


async def test_course_overview_updates_live_and_frees_its_session(stack, browser):
    settings, worker, dashboard = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview")
    for name in ("Ana Lima", "Bilal Okafor", "Chen Wu"):  # every roster student, events or not
        await expect(page.locator(".tabulator-row", has_text=name)).to_be_visible(timeout=30_000)
    await expect(cell(page, "Ana Lima", "events")).to_have_text("2")
    await expect(cell(page, "Ana Lima", "words")).to_have_text("2")
    await expect(cell(page, "Bilal Okafor", "status")).to_have_text("no events yet")
    assert "course=alg-1" in page.url  # the course is in the URL, so it can be shared or reloaded

    # Bilal starts writing: his row changes without a reload.
    await produce(settings, [save("s2", "notes", 5000 + i, 1 + i, "x") for i in range(3)])
    await expect(cell(page, "Bilal Okafor", "events")).to_have_text("3", timeout=20_000)
    await expect(cell(page, "Bilal Okafor", "status")).not_to_have_text("no events yet")
    await expect(cell(page, "Ana Lima", "events")).to_have_text("2")
    if os.environ.get("LO_STREAM_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert (await live_watchers(settings))["alg-1"]["watchers"] == 1
    await page.close()  # the tab goes: its session, and the live subscription it held, go too
    for _ in range(100):
        if not (await live_watchers(settings)).get("alg-1", {}).get("watchers"):
            break
        await asyncio.sleep(0.2)
    assert not (await live_watchers(settings)).get("alg-1", {}).get("watchers"), await live_watchers(settings)


async def test_a_revoked_teacher_is_signed_out_and_their_live_view_ends(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=alg-1")
    await expect(cell(page, "Ana Lima", "events")).to_have_text("2", timeout=30_000)
    assert (await live_watchers(settings))["alg-1"]["watchers"] == 1
    UserStore(settings.users_file).revoke("ms.rivera")
    await page.wait_for_url("**/logout**", timeout=15_000)
    for _ in range(100):  # the tab left: its session, and the live subscription it held, end
        if not (await live_watchers(settings)).get("alg-1", {}).get("watchers"):
            break
        await asyncio.sleep(0.2)
    assert not (await live_watchers(settings)).get("alg-1", {}).get("watchers"), await live_watchers(settings)
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=alg-1")
    assert "/login" in page.url  # signed out, and her password no longer signs her in
    again = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await expect(again.get_by_text("Invalid username or password")).to_be_visible()


async def test_a_teacher_cannot_open_another_teachers_course(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=bio")
    await expect(page.get_by_text("You cannot open course 'bio'")).to_be_visible(timeout=30_000)
    await expect(page.get_by_text("Dara Kim")).to_have_count(0)
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/student?course=bio&student=b1")
    await expect(page.get_by_text("Cannot show b1")).to_be_visible(timeout=30_000)

    other = await sign_in(browser, settings, "mr.chen", "chen-pw")
    await other.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=bio")
    await expect(other.locator(".tabulator-row", has_text="Dara Kim")).to_be_visible(timeout=30_000)


async def test_wrong_password_is_refused(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "guess")
    await expect(page.get_by_text("Invalid username or password")).to_be_visible()
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview")
    assert "/login" in page.url  # not signed in: back to the login page


async def test_student_detail_shows_the_text_typed(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/student?course=alg-1&student=s1")
    await expect(page.get_by_text("Hello world")).to_be_visible(timeout=30_000)
    await expect(page.get_by_text("2 words · 11 characters")).to_be_visible()
    await plots_drawn(page, 2)  # activity over time and typing intervals


async def plots_drawn(page: Page, count: int) -> None:
    """Wait until `count` Bokeh plots have drawn their canvases."""
    for _ in range(150):
        if await page.locator("canvas").count() >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {count} plots on {page.url}")


async def test_class_view_and_a_clear_message_while_the_backend_is_down(stack, browser):
    settings, worker, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/class?course=alg-1")
    await expect(page.get_by_text("Class view: alg-1")).to_be_visible(timeout=30_000)
    await plots_drawn(page, 2)  # words and time on task across the class
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=alg-1")
    await expect(page.locator(".tabulator-row", has_text="Ana Lima")).to_be_visible(timeout=30_000)

    assert worker.stop() == 0, worker.log_tail()
    await expect(page.get_by_text("unreachable")).to_be_visible(timeout=30_000)
    worker.start()  # it comes back: so does the page, by itself
    await expect(page.get_by_text("unreachable")).to_have_count(0, timeout=90_000)
    await expect(cell(page, "Ana Lima", "events")).to_have_text("2")
