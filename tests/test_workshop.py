"""The researcher's workshop (docs/workshop.md) from a clean state: scaffold a module with
``lo-stream new-module``, ``pip install -e`` it, run its unit test, run a worker against the real
broker, simulate a class, and find each student's count in the module's export, on its dashboard
page and in offline mode over the same events."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import orjson
import pytest

from lo_stream.envelopes import decode_envelopes
from lo_stream.notebook import query as notebook_query
from lo_stream.query.access import UserStore
from lo_stream.query.client import BackendError
from lo_stream.scaffold import ScaffoldError, check_name, new_module
from tests.support import ServiceProcess, free_port, lo_stream_command, read_table, read_topic

MODULE = "mymodule"  # the name docs/workshop.md uses
REDUCER = f"{MODULE}.reducers.student_event_counter"
EXPORT = f"{MODULE}.overview"
COURSE = "workshop"
DASHBOARD = ("-m", "lo_stream", "dashboard")
WORKSHOP = Path(__file__).parent.parent / "docs" / "workshop.md"


# -- lo-stream new-module: what it makes, and the names it refuses --------------------------


def test_new_module_renders_a_complete_package(tmp_path):
    target = new_module(MODULE, tmp_path)
    files = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert files == ["README.md", "pyproject.toml", f"src/{MODULE}/__init__.py", f"src/{MODULE}/dashboards.py",
                     f"src/{MODULE}/reducers.py", "tests/test_reducers.py"]
    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lo_stream.modules"] == {MODULE: MODULE}
    for path in target.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # valid Python, every placeholder filled in
    assert "$" not in "".join(path.read_text() for path in target.rglob("*") if path.is_file())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("MyModule", "lowercase letters, digits and underscores"),
        ("2nd_try", "starting with a letter"),
        ("my-module", "is not usable"),
        ("lambda", "not a Python keyword"),
        ("writing", "a lo_stream module named 'writing' is already installed"),
        ("json", "'json' is already an importable Python module"),
        ("lo_stream", "already an importable Python module"),
    ],
)
def test_new_module_refuses_unusable_names(tmp_path, name, message):
    with pytest.raises(ScaffoldError, match=message):
        check_name(name, tmp_path)
    assert not (tmp_path / name).exists()


def test_new_module_refuses_an_existing_directory(tmp_path):
    (tmp_path / MODULE).mkdir()
    done = lo_stream_command("new-module", MODULE, "--directory", str(tmp_path))
    assert done.returncode == 1
    assert f"{tmp_path / MODULE} already exists: choose another name, or another place" in done.stderr


# -- the workshop, with the real broker ----------------------------------------------------


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args],
                   check=True, timeout=300)


def _uninstall() -> None:
    try:
        distribution(MODULE)
    except PackageNotFoundError:
        return
    _pip("uninstall", "--yes", MODULE)


@pytest.fixture
def installed_module(tmp_path) -> Path:
    """The scaffolded module, ``pip install -e``'d into the test venv for this test only.

    It is uninstalled whatever happens: an entry point left behind, pointing to a deleted
    directory, would stop every later worker from starting. A run killed before its teardown
    is cleaned up by the next one."""
    _uninstall()
    done = lo_stream_command("new-module", MODULE, "--directory", str(tmp_path))
    assert done.returncode == 0, done.stderr
    try:
        _pip("install", "--no-deps", "-e", str(tmp_path / MODULE))
        yield tmp_path / MODULE
    finally:
        _uninstall()


def _module_unit_tests(project: Path, passing: int) -> None:
    """Run the module's own tests, as a researcher would (``python -m pytest`` in its directory)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"{passing} passed" in done.stdout, done.stdout + done.stderr


def _course_counts(settings, token: str, expected: dict[str, int], worker: ServiceProcess,
                   timeout: float = 180) -> dict[str, int]:
    """The export's events per student, asked until they equal `expected` (the worker catches up)."""
    deadline = time.monotonic() + timeout
    counts: dict = {}
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, worker.log_tail()
        try:
            counts = notebook_query(EXPORT, {"course_id": COURSE}, url=settings.query_url, token=token)["events"].to_dict()
        except BackendError as exc:
            if exc.status not in (0, 503):  # unreachable or starting: wait; anything else is a failure
                raise
        if counts == expected:
            return counts
        time.sleep(1)
    raise AssertionError(f"{EXPORT} gives {counts}, expected {expected}\nworker log:\n{worker.log_tail()}")


def _events_as_log(settings, path: Path) -> int:
    """Write every envelope of the events topic to a JSON-lines log; return how many."""
    records = asyncio.run(read_topic(settings, settings.topics.events, latest_per_key=False))
    envelopes = [item for key, value in records for item in decode_envelopes(orjson.dumps(value), key.decode())]
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in envelopes))
    return len(envelopes)


@pytest.mark.kafka
def test_the_workshop_from_a_clean_state(installed_module, settings, tmp_path):
    env = {**os.environ, **settings.as_env()}
    # The module's own unit test passes, and lo_stream sees the module.
    _module_unit_tests(installed_module, passing=1)
    listed = lo_stream_command("modules", env=env)
    assert f"{MODULE}  ({MODULE}, from {MODULE})" in listed.stdout and REDUCER in listed.stdout, listed.stderr

    users = UserStore(settings.users_file)
    token = users.add("researcher", "admin")
    users.add("teacher", "teacher", password="teacher-pw")  # the simulated course's teacher
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    try:
        summary = tmp_path / "class.json"
        simulated = lo_stream_command("simulate", "--direct", "--students", "4", "--duration", "4", "--course", COURSE,
                                      "--summary", str(summary), env=env)
        assert simulated.returncode == 0, simulated.stderr
        expected = {student: typed["events"] for student, typed in json.loads(summary.read_text()).items()}
        assert len(expected) == 4 and all(expected.values())

        # The live count per student, from the notebook helper and from lo-stream query.
        assert _course_counts(settings, token, expected, worker) == expected
        answer = lo_stream_command("query", EXPORT, "--param", f"course_id={COURSE}", "--token", token, env=env)
        assert answer.returncode == 0, answer.stderr
        rows = json.loads(answer.stdout)
        assert {row["key"]["student"]: row["events"] for row in rows} == expected
        assert all(row["full_name"] for row in rows)  # joined with the roster
        assert rows[0]["provenance"][0]["reducer"] == REDUCER

        # docs/workshop.md's look at the events in Kafka.
        peek = subprocess.run([sys.executable, "-"], input=_shell_heredoc("AIOKafkaConsumer"), env=env,
                              capture_output=True, text=True, timeout=120)
        keys = re.findall(r"^partition \d+ offset \d+ key (\S+)$", peek.stdout, flags=re.M)
        assert len(keys) == 5 and set(keys) <= set(expected), peek.stdout + peek.stderr

        # The dashboard serves the module's page, showing the counts.
        _check_dashboard_page(settings.model_copy(update={"dashboard_port": free_port()}), tmp_path,
                              rows[0]["full_name"], rows[0]["events"])
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # Offline mode over the very same events gives the same counts.
    log = tmp_path / "events.jsonl"
    assert _events_as_log(settings, log) == sum(expected.values())
    tables = tmp_path / "tables.json"
    done = lo_stream_command("offline", str(log), "--module", MODULE, "--output", str(tables), env=env)
    assert done.returncode == 0, done.stderr
    assert {student: state["count"] for student, state in json.loads(tables.read_text())[REDUCER].items()} == expected

    # docs/workshop.md's extension: the median interval between keystrokes, its test, query and page.
    _extend_as_the_workshop_says(installed_module)
    _module_unit_tests(installed_module, passing=2)
    done = lo_stream_command("offline", str(log), "--module", MODULE, "--output", str(tables), env=env)
    assert done.returncode == 0, done.stderr
    states = json.loads(tables.read_text())[REDUCER]
    assert {student: state["count"] for student, state in states.items()} == expected
    assert {student: state["median_interval_ms"] for student, state in states.items()} == _median_intervals(log)
    # docs/workshop.md's step 6: replay the history through the new logic, exactly as the doc says.
    [replay] = [line for line in WORKSHOP.read_text().splitlines() if line.startswith("lo-stream replay --from earliest")]
    replayed = lo_stream_command(*shlex.split(replay.split("#")[0])[1:], env=env)
    assert replayed.returncode == 0, replayed.stderr
    rebuilt = asyncio.run(read_table(settings, f"{REDUCER}-v1"))
    assert {student: value["state"] for student, value in rebuilt.items()} == states
    shown = subprocess.run([sys.executable, "-c", _shell_command("json.dumps(mymodule.QUERIES")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert json.loads(shown.stdout)["exports"] == {"overview": {"returns": "overview", "description": (
        f"{REDUCER} for every student of a course, with the roster")}}, shown.stderr


def _doc_block(first_line: str) -> str:
    """The code block of docs/workshop.md that starts with `first_line`."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", WORKSHOP.read_text(), flags=re.M | re.S)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"docs/workshop.md has {len(found)} code blocks starting with {first_line!r}"
    return found[0]


def _shell_heredoc(containing: str) -> str:
    """The Python program of the doc's ``python - <<'EOF'`` block that mentions `containing`."""
    programs = re.findall(r"^python - <<'EOF'\n(.*?)^EOF$", WORKSHOP.read_text(), flags=re.M | re.S)
    found = [program for program in programs if containing in program]
    assert len(found) == 1, f"docs/workshop.md has {len(found)} python heredocs mentioning {containing!r}"
    return found[0]


def _shell_command(containing: str) -> str:
    """The program of the doc's ``python -c '...'`` command that mentions `containing`."""
    [program] = [p for p in re.findall(r"^python -c '(.*)'$", WORKSHOP.read_text(), flags=re.M) if containing in p]
    return program


def _extend_as_the_workshop_says(project: Path) -> None:
    package = project / "src" / MODULE
    (package / "reducers.py").write_text(_doc_block(f"# src/{MODULE}/reducers.py\n"))
    tests = project / "tests" / "test_reducers.py"
    for path, start in [(package / "__init__.py", '    {"count": '), (package / "dashboards.py", "COLUMNS = "),
                        (tests, "START = ")]:
        old = re.search(rf"^{re.escape(start)}.*\n", path.read_text(), flags=re.M)
        assert old, f"{path} has no line starting with {start!r}"
        path.write_text(path.read_text().replace(old.group(0), _doc_block(start)))
    first_test = "assert keystrokes(1000, 1150, 1400)"
    assert f"`{first_test}[\"count\"] == 3`" in WORKSHOP.read_text()
    tests.write_text(tests.read_text().replace(f"{first_test} == {{\"count\": 3}}", f"{first_test}[\"count\"] == 3")
                     + "\n\n" + _doc_block("def test_median_interval"))


def _median_intervals(log: Path, window: int = 10) -> dict[str, float | None]:
    """Per student, the median interval between their last `window` keystroke times (the doc's definition)."""
    times: dict[str, list[int]] = {}
    for line in log.read_bytes().splitlines():
        event = orjson.loads(line)
        times.setdefault(event["metadata"]["auth"]["safe_user_id"], []).append(event["client"]["timestamp"])
    medians = {}
    for student, stamps in times.items():
        last = sorted(stamps)[-window:]
        intervals = [later - earlier for earlier, later in zip(last, last[1:])]
        medians[student] = float(statistics.median(intervals)) if intervals else None
    return medians


def _check_dashboard_page(settings, tmp_path: Path, full_name: str, count: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_dashboards import CHROMIUM, CHROMIUM_ARGS

    dashboard = ServiceProcess(settings, tmp_path / "dashboard.log", DASHBOARD).start()
    base = f"http://127.0.0.1:{settings.dashboard_port}"
    try:
        asyncio.run(dashboard.wait_until_serving(f"{base}/login"))
        assert f"{base}/{EXPORT}" in dashboard.log_file.read_text()  # listed with the built-in pages
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"{base}/login")
            page.fill("input[name=username]", "teacher")
            page.fill("input[name=password]", "teacher-pw")
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_load_state()
            page.goto(f"{base}/{MODULE}.overview?course={COURSE}")
            row = page.locator("tr", has_text=full_name)
            expect(row.locator("td").nth(1)).to_have_text(str(count), timeout=30_000)
            # Inside the dashboards' frame: the navigation lists the module's page beside the built-in ones.
            navigation = page.get_by_role("navigation", name="Dashboards")
            expect(navigation.get_by_role("link", name=f"{MODULE}: overview")).to_have_attribute("aria-current", "page")
            expect(navigation.get_by_role("link", name="Course overview")).to_be_visible()
            browser.close()
    finally:
        dashboard.stop()
