"""The teacher dashboards in a real browser (Debian's Chromium, driven by Playwright) against the
real stack: broker, worker with the query API, dashboard server. Every page is also checked with
axe-core: no serious or critical accessibility violations."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright, expect

from lo_stream import offline
from lo_stream.connectors.rosters import roster_student, write_course
from lo_stream.query.access import UserStore
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, envelope, free_port, produce, wait_for_table

pytestmark = pytest.mark.kafka

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DASHBOARD = ("-m", "lo_stream", "dashboard")
HELLO = [("s1", "essay", 1000, 1, "Hello"), ("s1", "essay", 1200, 6, " world")]


def save(student: str, doc_id: str, timestamp: int, position: int, text: str) -> tuple[str, dict]:
    return student, envelope(student, event="google_docs_save", doc_id=doc_id, timestamp=timestamp,
                             bundles=[{"commands": [{"ty": "is", "ibi": position, "s": text}]}])


def typing(student: str, words: int, start: int | None = None) -> list[tuple[str, dict]]:
    """`words` saves of "w " in a document of their own, timed from `start` (ms; now if None)."""
    clock = int(time.time() * 1000) if start is None else start
    return [save(student, "notes", clock + 100 * i, 1 + 2 * i, "w ") for i in range(words)]


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
    await produce(settings, [save(*event) for event in HELLO])
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
    """A page of a browser context of its own (its own cookies), signed in as `user`."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/login")
    await page.get_by_label("Name").fill(user)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()
    return page


def card(page: Page, student: str):
    return page.locator(f'article.lo-card[data-student="{student}"]')


async def card_order(page: Page) -> list[str]:
    return await page.locator("article.lo-card").evaluate_all("cards => cards.map(c => c.dataset.student)")


async def assert_accessible(page: Page) -> None:
    """axe-core finds no serious or critical violation on the page as it stands."""
    results = await Axe().run(page)
    bad = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page.url}: " + "; ".join(bad)


async def status_as(settings, user: str | None, password: str = "") -> tuple[int, dict]:
    """The dashboard server's /lo_stream/status as `user` (signed in with the login form) or anonymously."""
    base = f"http://127.0.0.1:{settings.dashboard_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies for 127.0.0.1
        if user:
            async with http.post(f"{base}/login", data={"username": user, "password": password}) as signed:
                assert signed.status == 200 and "/login" not in str(signed.url)
        async with http.get(f"{base}/lo_stream/status") as response:
            return response.status, await response.json(content_type=None)


async def server_status(settings) -> dict:
    status, answer = await status_as(settings, "root", "root-pw")
    assert status == 200, answer
    return answer


async def watchers_of(settings, course: str) -> int:
    return (await server_status(settings))["live_courses"].get(course, {}).get("watchers", 0)


async def until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_the_servers_status_is_for_admins_only(stack):
    settings, _, _ = stack
    assert await status_as(settings, None) == (
        401, {"error": "sign in (at /login) as an admin to see the dashboard server's status"})
    assert await status_as(settings, "ms.rivera", "rivera-pw") == (
        403, {"error": "ms.rivera is a teacher: the status is for admins"})
    status = await server_status(settings)
    assert status["live_courses"] == {} and status["sessions"] == 0  # nobody is looking at anything yet
    assert status["memory_mb"] > 0


async def test_our_own_login_page_signs_in_and_refuses_a_wrong_password(stack, browser):
    settings, _, _ = stack
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/login")
    await expect(page.get_by_role("heading", name="lo_stream")).to_be_visible()
    assert await page.locator("img").count() == 0  # no logo to break
    await assert_accessible(page)
    page = await sign_in(browser, settings, "ms.rivera", "guess")
    await expect(page.get_by_role("alert")).to_contain_text("Invalid username or password")
    await assert_accessible(page)
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview")
    assert "/login" in page.url  # not signed in: back to the login page
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    header = page.get_by_role("banner")
    await expect(header).to_contain_text("Signed in as ms.rivera")
    await header.get_by_role("link", name="Sign out").click()
    await expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    await assert_accessible(page)


async def test_cards_and_table_update_live_and_the_session_lets_go(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview")
    await expect(card(page, "s1")).to_contain_text("Ana Lima", timeout=30_000)
    await expect(card(page, "s1")).to_contain_text("2 words")
    await expect(card(page, "s1")).to_contain_text("Idle")  # her edits were long ago
    await expect(card(page, "s1")).to_contain_text("essay")  # the document (no title: its id)
    await expect(card(page, "s2")).to_contain_text("Not started")
    await expect(page.get_by_role("group", name="The class now")).to_contain_text("2Not started")
    assert "course=alg-1" in page.url  # the course is in the URL, so it can be shared or reloaded
    await assert_accessible(page)

    # Bilal starts writing: his card changes in place, without a reload; Ana's card is not redrawn.
    await card(page, "s1").evaluate("c => { c.dataset.marker = 'kept' }")
    await produce(settings, typing("s2", 3))
    await expect(card(page, "s2")).to_contain_text("3 words", timeout=20_000)
    await expect(card(page, "s2")).to_contain_text("Writing now")
    assert await card(page, "s1").get_attribute("data-marker") == "kept"

    await page.get_by_role("button", name="Table").click()
    row = page.locator("tr", has_text="Bilal Okafor")
    await expect(row.locator("td").nth(3)).to_have_text("3")  # words
    await produce(settings, [save("s2", "notes", int(time.time() * 1000), 7, "more ")])
    await expect(row.locator("td").nth(3)).to_have_text("4", timeout=20_000)
    await expect(row.get_by_role("link", name="Bilal Okafor")).to_have_attribute("href", "student?course=alg-1&student=s2")
    await assert_accessible(page)

    assert await watchers_of(settings, "alg-1") == 1
    await page.close()  # the tab goes: its session, and the live subscription it held, go too
    await until(lambda: _is(watchers_of(settings, "alg-1"), 0))


async def _is(value, expected) -> bool:
    return await value == expected


async def test_needs_attention_puts_the_idle_student_first_and_sorting_and_finding_work(stack, browser):
    settings, _, _ = stack
    await produce(settings, typing("s3", 5))  # Chen writes now; Ana went idle long ago; Bilal has not started
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=alg-1")
    await expect(card(page, "s3")).to_contain_text("5 words", timeout=30_000)
    assert await card_order(page) == ["s1", "s2", "s3"]  # needs attention: idle, not started, writing
    await expect(card(page, "s1")).to_contain_text("Idle")
    sort = page.get_by_label("Sort by")
    await sort.select_option("Most words")
    await until(lambda: _is(card_order(page), ["s3", "s1", "s2"]))
    await sort.select_option("Name")
    await until(lambda: _is(card_order(page), ["s1", "s2", "s3"]))
    await page.get_by_label("Find a student").fill("chen")
    await until(lambda: _is(card_order(page), ["s3"]))


async def test_a_revoked_teacher_is_signed_out_and_their_live_view_ends(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=alg-1")
    await expect(card(page, "s1")).to_contain_text("2 words", timeout=30_000)
    assert await watchers_of(settings, "alg-1") == 1
    UserStore(settings.users_file).revoke("ms.rivera")
    await page.wait_for_url("**/logout**", timeout=15_000)
    await until(lambda: _is(watchers_of(settings, "alg-1"), 0))  # the tab left: its subscription ended
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=alg-1")
    assert "/login" in page.url  # signed out, and her password no longer signs her in
    again = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await expect(again.get_by_text("Invalid username or password")).to_be_visible()


async def test_a_teacher_cannot_open_another_teachers_course_or_student_through_any_page(stack, browser):
    settings, _, _ = stack
    base = f"http://127.0.0.1:{settings.dashboard_port}"
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    for path in ("overview?course=bio", "class?course=bio", "student?course=bio&student=b1"):
        await page.goto(f"{base}/{path}")
        await expect(page.get_by_text("You cannot open course 'bio'")).to_be_visible(timeout=30_000)
        await expect(page.get_by_text("Dara Kim")).to_have_count(0)
        await assert_accessible(page)
    await page.goto(f"{base}/student?course=alg-1&student=b1")  # her course, another teacher's student
    await expect(page.get_by_text("This student is not on the roster of course 'alg-1'")).to_be_visible(timeout=30_000)
    await expect(page.get_by_text("Dara Kim")).to_have_count(0)

    other = await sign_in(browser, settings, "mr.chen", "chen-pw")
    await other.goto(f"{base}/overview?course=bio")
    await expect(card(other, "b1")).to_contain_text("Dara Kim", timeout=30_000)
    await expect(card(other, "b1")).to_contain_text("Not started")
    await expect(other.get_by_role("status")).to_contain_text("No student of this course has written anything yet")


async def test_the_student_page_shows_the_writing_and_plays_it_back(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"http://127.0.0.1:{settings.dashboard_port}/student?course=alg-1&student=s1")
    await expect(page.get_by_role("heading", name="Ana Lima")).to_be_visible(timeout=30_000)  # from the roster
    text = page.locator(".markdown", has_text="Hello world").first
    await expect(text).to_be_visible()
    await expect(page.get_by_text("2 words · 11 characters")).to_be_visible()
    await expect(page.get_by_label("Document")).to_contain_text("essay")

    # Playback: the text as of a chosen edit is what offline mode rebuilds from the same events.
    moment = page.get_by_label("Moment of the session shown (edits)")
    await expect(moment).to_have_attribute("max", "2", timeout=30_000)
    await moment.focus()
    await page.keyboard.press("Home")
    await expect(page.get_by_text("Before the first edit")).to_be_visible()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_text("edit 1 of 2")).to_be_visible()
    first = offline.run([envelope for _, envelope in [save(*HELLO[0])]], "writing")
    expected = first.tables["lo_stream.writing.text"]['["s1","essay"]']["text"]
    assert expected == "Hello"
    await expect(page.locator(".markdown", has_text=expected).last).to_have_text(expected)
    await page.get_by_role("button", name="Play").click()
    await expect(page.get_by_text("edit 2 of 2")).to_be_visible(timeout=10_000)
    await assert_accessible(page)


async def test_the_class_view_and_plain_words_while_the_backend_is_down(stack, browser):
    settings, worker, _ = stack
    base = f"http://127.0.0.1:{settings.dashboard_port}"
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    await page.goto(f"{base}/class")
    await expect(page.get_by_text("Choose a course to see its class view")).to_be_visible(timeout=30_000)
    await page.get_by_role("link", name="Algebra 1").click()
    await expect(page.get_by_role("group", name="The class now")).to_contain_text("1Idle", timeout=30_000)
    await plots_drawn(page, 3)  # activity over the hour, words and time on task across the class
    await assert_accessible(page)
    await page.goto(f"{base}/overview?course=alg-1")
    await expect(card(page, "s1")).to_contain_text("2 words", timeout=30_000)

    assert worker.stop() == 0, worker.log_tail()
    await expect(page.get_by_role("alert")).to_contain_text("cannot be reached", timeout=30_000)
    worker.start()  # it comes back: so does the page, by itself, live again
    await produce(settings, typing("s2", 2))
    await expect(card(page, "s2")).to_contain_text("2 words", timeout=90_000)
    await expect(page.get_by_role("alert")).to_have_count(0)
    await expect(card(page, "s1")).to_contain_text("2 words")


async def plots_drawn(page: Page, count: int) -> None:
    """Wait until `count` Bokeh plots have drawn their canvases."""
    for _ in range(150):
        if await page.locator("canvas").count() >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"fewer than {count} plots on {page.url}")


async def test_sessions_opened_and_closed_fifty_times_leave_nothing_behind(stack, browser):
    settings, _, _ = stack
    page = await sign_in(browser, settings, "ms.rivera", "rivera-pw")
    context = page.context
    await page.close()
    memory = []
    for opened in range(1, 51):
        tab = await context.new_page()
        await tab.goto(f"http://127.0.0.1:{settings.dashboard_port}/overview?course=alg-1")
        await expect(card(tab, "s1")).to_contain_text("2 words", timeout=30_000)
        await tab.close()
        if opened in (10, 50):
            await until(lambda: _is(_sessions_and_watchers(settings), (0, 0)), timeout=30)
            memory.append((await server_status(settings))["memory_mb"])
    # Every session and its live subscription went with its tab; memory stayed flat from 10 to 50.
    assert memory[1] - memory[0] < 40, memory


async def _sessions_and_watchers(settings) -> tuple[int, int]:
    status = await server_status(settings)
    return status["sessions"], status["live_courses"].get("alg-1", {}).get("watchers", 0)
