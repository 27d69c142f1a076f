"""Replay on a real broker: rebuild tables in place with new logic, from the start or from a time,
refuse while workers are live, build a new version beside the serving one and promote it, and
look at a student's state as of a past time."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest

from lo_stream import offline
from lo_stream.connectors.rosters import roster_student, write_course
from lo_stream.query.access import UserStore
from lo_stream.reducers import ReducerRegistry, event_reducer, registry
from lo_stream.replay import history, state_at
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, envelope, lo_stream_command, produce, read_table, read_topic, state_only, wait_for_table

pytestmark = pytest.mark.kafka

POINTS = "lo_replaymod.points"
EVENT_COUNT = "lo_stream.writing.event_count-v1"
def env_of(settings) -> dict[str, str]:
    return {**os.environ, **settings.as_env()}


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]


class ReplayModule:
    """A module installed for one test whose reducer's logic (points per event) and version the
    test rewrites, as a researcher would edit their code."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "lo_replaymod").mkdir(parents=True)
        (root / "pyproject.toml").write_text(textwrap.dedent("""\
            [project]
            name = "lo-replaymod"
            version = "0.1"
            [project.entry-points."lo_stream.modules"]
            replaymod = "lo_replaymod"
            [tool.setuptools]
            packages = ["lo_replaymod"]
            """))
        self.write(step=1, version=1)

    def write(self, step: int, version: int) -> None:
        (self.root / "lo_replaymod" / "__init__.py").write_text(textwrap.dedent(f"""\
            from lo_stream import student_event_reducer
            from lo_stream.query import course_query

            @student_event_reducer(null_state={{"points": 0}}, version={version})
            def points(event, state):
                return {{"points": state["points"] + {step}}}

            QUERIES = course_query("lo_replaymod.points")
            """))


@pytest.fixture
def replay_module(tmp_path: Path) -> Iterator[ReplayModule]:
    module = ReplayModule(tmp_path / "replaymod")
    subprocess.run([*PIP, "install", "--no-deps", "-e", str(module.root)], check=True, timeout=300)
    try:
        yield module
    finally:
        subprocess.run([*PIP, "uninstall", "--yes", "lo-replaymod"], check=True, timeout=120)


def events_for(counts: dict[str, int]) -> list[tuple[str, dict]]:
    return [(s, envelope(s, event="keystroke", timestamp=1000 + i)) for s, n in counts.items() for i in range(n)]


def points_table(table: dict) -> dict[str, int]:
    return {key: value["state"]["points"] for key, value in table.items()}


async def run_worker(settings, log: Path, until: dict[str, dict], table: str) -> None:
    """Start a worker, wait until `table` holds `until`, stop it."""
    worker = ServiceProcess(settings, log).start()
    try:
        await wait_for_table(settings, table, until, timeout=180, project=state_only, worker=worker)
    finally:
        assert worker.stop() == 0, worker.log_tail()


async def test_replay_rebuilds_only_the_named_reducer_with_its_new_logic(settings, replay_module, tmp_path):
    await ensure_topics(settings)
    counts = {"ana": 3, "bo": 5, "cy": 1, "di": 7}
    await produce(settings, events_for(counts))
    await run_worker(settings, tmp_path / "w1.log", {s: {"points": n} for s, n in counts.items()}, f"{POINTS}-v1")
    before = await read_table(settings, EVENT_COUNT)

    replay_module.write(step=10, version=1)  # a bug fix: same version, rebuilt in place
    replayed = lo_stream_command("replay", "--reducers", POINTS, env=env_of(settings))
    assert replayed.returncode == 0, replayed.stderr
    assert "cleared 4 keys" in replayed.stderr and f"replayed {sum(counts.values())} records" in replayed.stdout

    assert points_table(await read_table(settings, f"{POINTS}-v1")) == {s: 10 * n for s, n in counts.items()}
    # The changelog holds only new values (a tombstone then the rebuilt value per key), and the
    # other reducers' tables are exactly as they were: the re-read events were skipped.
    changelog = f"{settings.app_id}-{POINTS}-v1-changelog"
    history = await read_topic(settings, changelog, latest_per_key=False)
    assert sum(1 for _, value in history if value is None) == len(counts)  # one tombstone per old key
    assert points_table(await read_topic(settings, changelog)) == {s: 10 * n for s, n in counts.items()}
    assert await read_table(settings, EVENT_COUNT) == before

    # The rebuilt table equals a fresh run of the new code over the same events (offline mode).
    fresh = ReducerRegistry()
    event_reducer(null_state={"points": 0}, registry=fresh)(_ten_points)
    expected = offline.run([e for _, e in events_for(counts)], [fresh.get(f"{__name__}._ten_points")])
    rebuilt = await read_table(settings, f"{POINTS}-v1")
    assert {key: value["state"] for key, value in rebuilt.items()} == expected.tables[f"{__name__}._ten_points"]


def _ten_points(event, state):
    return {"points": state["points"] + 10}


async def test_replay_from_a_time_rebuilds_from_the_events_since_then(settings, replay_module, tmp_path):
    await ensure_topics(settings)
    early = {"ana": 2, "bo": 3}
    await produce(settings, events_for(early))
    await asyncio.sleep(1.5)  # Kafka stamps records in ms: leave no doubt which side of the time they are
    since = datetime.datetime.now().astimezone()
    await asyncio.sleep(1.5)
    late = {"bo": 4, "cy": 1}
    await produce(settings, events_for(late))
    everything = {"ana": 2, "bo": 7, "cy": 1}
    await run_worker(settings, tmp_path / "w1.log", {s: {"points": n} for s, n in everything.items()}, f"{POINTS}-v1")

    replay_module.write(step=10, version=1)
    replayed = lo_stream_command("replay", "--reducers", POINTS, "--from", since.isoformat(), env=env_of(settings))
    assert replayed.returncode == 0, replayed.stderr
    # Only the events stored since then are in the rebuilt table: ana's all came before.
    assert points_table(await read_table(settings, f"{POINTS}-v1")) == {"bo": 40, "cy": 10}
    assert {k: v["state"]["count"] for k, v in (await read_table(settings, EVENT_COUNT)).items()} == everything


async def test_replay_refuses_while_workers_are_live(settings, replay_module, tmp_path):
    await ensure_topics(settings)
    await produce(settings, events_for({"ana": 2}))
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    try:
        await wait_for_table(settings, f"{POINTS}-v1", {"ana": {"points": 2}}, timeout=180, project=state_only, worker=worker)
        refused = lo_stream_command("replay", "--reducers", POINTS, env=env_of(settings))
        assert refused.returncode == 1
        assert "hold the consumer group" in refused.stderr and "stop them" in refused.stderr
        refused = lo_stream_command("promote", POINTS, "2", env=env_of(settings))
        assert refused.returncode == 1 and "never built" in refused.stderr
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert points_table(await read_table(settings, f"{POINTS}-v1")) == {"ana": 2}  # untouched


def test_a_replay_that_stalls_says_so_and_stops_its_worker_when_killed(settings, monkeypatch, capsys):
    """`lo-stream replay` follows its worker's commits; when they stop moving it says where to look,
    and a SIGTERM to it stops the worker too."""
    from lo_stream import cli
    from lo_stream.replay import Progress

    monkeypatch.setattr(cli, "STALL_WARNING_S", 2.0)
    # A group nobody commits for: the worker runs (in its own group) and this plan never moves.
    plan = Progress("nobody-commits-here", start={0: 0}, end={0: 1})
    log = settings.data_dir / f"{plan.group}.log"
    real_sleep, polls, killed = time.sleep, [], []

    def poll_then_get_killed(seconds: float) -> None:
        polls.append(seconds)
        assert len(polls) < 300, f"the worker never got ready: {log.read_text()[-3000:]}"
        # Once (stopping the worker sleeps too), past the warning and with the worker up.
        if not killed and len(polls) > 4 and "worker serving on" in log.read_text():
            killed.append(len(polls))
            signal.raise_signal(signal.SIGTERM)
        real_sleep(seconds)

    monkeypatch.setattr(cli.time, "sleep", poll_then_get_killed)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        cli._follow(settings, plan, "replaying", {}, until_caught_up=True)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    warned = capsys.readouterr().err
    assert warned.count("no progress for 2s (0 of 1 records); still waiting") == 1, warned
    assert f"The worker's log ({log}) ends with:" in warned
    assert "SIGTERM received" in log.read_text(), log.read_text()[-3000:]  # stopped, not orphaned


async def query_points(settings, token: str) -> dict[str, tuple[int, int]]:
    """(points, version) per student through the query API."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://{settings.bind_host}:{settings.worker_port}/api/query",
            json={"export": "replaymod.points", "params": {"course_id": "c1"}},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200, await response.text()
            rows = (await response.json())["result"]
    return {row["safe_user_id"]: (row["value"]["points"], row["provenance"][0]["version"]) for row in rows}


async def wait_for_points(settings, token: str, expected: dict[str, tuple[int, int]], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = await query_points(settings, token)
            if seen == expected:
                return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"the query answered {seen}, not {expected}")


async def test_blue_green_build_serves_the_old_version_until_promoted(settings, replay_module, tmp_path):
    await ensure_topics(settings)
    token = UserStore(settings.users_file).add("root", "admin")
    await write_course(settings, {"course_id": "c1", "name": "C1", "teachers": []},
                       [roster_student(s, s.title(), "X") for s in ("ana", "bo")])
    counts = {"ana": 30, "bo": 50}
    await produce(settings, events_for(counts))
    live = ServiceProcess(settings, tmp_path / "live.log").start()
    try:
        await wait_for_points(settings, token, {"ana": (30, 1), "bo": (50, 1)})
        replay_module.write(step=10, version=2)  # new logic, new version; the live worker runs the old code
        build = subprocess.Popen(
            [sys.executable, "-m", "lo_stream", "replay", "--reducers", POINTS, "--as-version", "2"],
            env=env_of(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # While v2 builds, queries answer from v1 — and v1 keeps following new events.
        await produce(settings, events_for({"ana": 1}))
        await wait_for_points(settings, token, {"ana": (31, 1), "bo": (50, 1)})
        out, err = build.communicate(timeout=300)
        assert build.returncode == 0, err
        assert "the workers still serve the old version" in out
        await wait_for_points(settings, token, {"ana": (31, 1), "bo": (50, 1)})
        versions = lo_stream_command("versions", env=env_of(settings))
        assert f"{POINTS}: code v2, serving v1 (workers running" in versions.stdout
        # Caught up when it stopped: at most the event sent during the build may be left for the promotion.
        assert re.search(r"build v2: stopped, lag [01]\b", versions.stdout), versions.stdout
        refused = lo_stream_command("promote", POINTS, "2", env=env_of(settings))
        assert refused.returncode == 1 and "stop them before promoting" in refused.stderr
    finally:
        assert live.stop() == 0, live.log_tail()

    await produce(settings, events_for({"bo": 2}))  # arrives while no worker runs: v2 must not miss it
    promoted = lo_stream_command("promote", POINTS, "2", env=env_of(settings))
    assert promoted.returncode == 0, promoted.stderr
    live = ServiceProcess(settings, tmp_path / "live-v2.log").start()
    try:
        await wait_for_points(settings, token, {"ana": (310, 2), "bo": (520, 2)})
        await produce(settings, events_for({"ana": 1}))
        await wait_for_points(settings, token, {"ana": (320, 2), "bo": (520, 2)})
    finally:
        assert live.stop() == 0, live.log_tail()
    versions = lo_stream_command("versions", env=env_of(settings))
    assert f"{POINTS}: code v2, serving v2" in versions.stdout

    refused = lo_stream_command("drop-version", POINTS, "2", env=env_of(settings))
    assert refused.returncode == 1 and "serves queries" in refused.stderr
    dropped = lo_stream_command("drop-version", POINTS, "1", env=env_of(settings))
    assert dropped.returncode == 0 and f"{settings.app_id}-{POINTS}-v1-changelog" in dropped.stdout, dropped.stderr


async def test_state_at_a_past_time_matches_an_offline_run_up_to_then(settings, tmp_path):
    await ensure_topics(settings)
    first = [envelope("ana", event="keystroke", timestamp=1000 + 150 * i) for i in range(6)]
    await produce(settings, [("ana", e) for e in first] + [("bo", envelope("bo", event="keystroke", timestamp=1))])
    await asyncio.sleep(1.5)
    at = datetime.datetime.now().astimezone()
    await asyncio.sleep(1.5)
    await produce(settings, [("ana", envelope("ana", event="keystroke", timestamp=9000 + 40 * i)) for i in range(10)])

    expected = offline.run(first, ["lo_stream.writing.typing_speed"]).tables["lo_stream.writing.typing_speed"]["ana"]
    shown = lo_stream_command("state-at", "lo_stream.writing.typing_speed", "--student", "ana", "--at", at.isoformat(),
                              env=env_of(settings))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"ana": expected}
    assert expected["median_interval_ms"] == 150
    later = await state_at(settings, registry.get("lo_stream.writing.typing_speed"), "ana", datetime.datetime.now().astimezone())
    assert later["ana"]["median_interval_ms"] == 40 and len(later["ana"]["timestamps"]) == 10


async def test_a_documents_history_folds_to_its_state_after_each_edit(settings):
    """What writing playback shows: the n first edits of a document give offline mode's text of them."""
    await ensure_topics(settings)

    def typed(doc, position, text, clock=None, student="ana"):
        client = {"event": "google_docs_save", "doc_id": doc,
                  "bundles": [{"commands": [{"ty": "is", "ibi": position, "s": text}]}]}
        return envelope(student, **client, **({"timestamp": clock} if clock is not None else {}))

    edits = [typed("essay", 1, "Once", 5000), typed("notes", 1, "n"), typed("essay", 5, " upon", 7000),
             envelope("ana", event="keystroke", doc_id="essay", timestamp=7500), typed("essay", 10, " a time")]
    await produce(settings, [("ana", e) for e in edits] + [("bo", typed("essay", 1, "other", student="bo"))])
    reducer = registry.get("lo_stream.writing.text")
    found = await history(settings, reducer, "ana", '["ana","essay"]')
    assert [edit for _, edit in found] == [edits[0], edits[2], edits[4]]  # this document's edits, in order
    assert [when for when, _ in found][:2] == [5000, 7000]  # the client's time; Kafka's where it gave none
    assert found[2][0] > 1_700_000_000_000
    for count in range(1, 4):
        expected = offline.run(edits[:[0, 2, 4][count - 1] + 1], ["lo_stream.writing.text"])
        state = reducer.initial_state()
        for _, edit in found[:count]:
            state = await reducer.apply(edit, state)
        assert state == expected.tables["lo_stream.writing.text"]['["ana","essay"]']
    assert state["text"] == "Once upon a time"
