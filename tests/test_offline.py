"""Offline mode: the same reducers over a list or a log file, in-process — and the very tables the
Kafka worker builds from the same events."""

from __future__ import annotations

import json
import random
import re

import orjson
import pytest

from lo_stream import offline
from lo_stream.connectors.simulator import Typist, invent_class
from lo_stream.envelopes import Identity, encode_message, make_envelope
from lo_stream.modules import load_modules
from lo_stream.reducers import ReducerRegistry, registry, student_event_reducer
from lo_stream.topics import ensure_topics
from tests.support import (
    ServiceProcess,
    envelope,
    lo_stream_command,
    lo_writing_session,
    produce,
    read_table,
    state_only,
    wait_for_table,
)

WRITING = "writing"


def simulated_class(students: int, events_each: int) -> list[dict]:
    """A simulated class's Google Docs saves and keystrokes, interleaved, with made-up timestamps,
    then each student's session in LO's event shapes (titles, tabs, history, Chrome sign-in)."""
    rng = random.Random(7)
    typists = [Typist(student, rng, ici=0.1) for student in invent_class(students, seed=3)]
    clock = 1_700_000_000_000
    envelopes = []
    for _ in range(events_each):
        for typist in typists:
            clock += rng.randrange(30, 900)
            event = {**typist.next_event(), "timestamp": clock}
            identity = Identity.of(typist.student.user_id, "test")
            envelopes.append(make_envelope(event, identity))
            if rng.random() < 0.2:
                envelopes.append(make_envelope({"event": "keystroke", "source": event["source"], "timestamp": clock + 5,
                                                "doc_id": event["doc_id"]}, identity))
    for typist in typists:
        identity = Identity.of(typist.student.user_id, "test")
        envelopes.extend(make_envelope(event, identity) for event in lo_writing_session(clock))
    return envelopes


def test_a_list_of_envelopes_gives_each_reducers_table():
    events = [envelope("ana", event="keystroke", timestamp=1000 + 120 * i) for i in range(4)]
    events.append(envelope("bo", event="tab_switch", timestamp=5))
    result = offline.run(events, WRITING)
    assert result.events == 5 and not result.errors and not result.bad_lines
    assert result.tables["lo_stream.writing.event_count"] == {"ana": {"count": 4}, "bo": {"count": 1}}
    assert result.tables["lo_stream.writing.typing_speed"]["ana"]["median_interval_ms"] == 120
    assert "bo" not in result.tables["lo_stream.writing.typing_speed"]  # its event is not an edit

    frame = result.frame("lo_stream.writing.event_count")
    assert frame.index.name == "student" and frame.loc["ana", "count"] == 4
    with pytest.raises(KeyError, match="no table for 'nope'"):
        result.frame("nope")


def test_a_log_file_with_bad_lines_and_raw_events(tmp_path):
    log = tmp_path / "class.jsonl"
    lines = [orjson.dumps(envelope("ana", event="keystroke", timestamp=1)), b"{not json", b"",
             b'{"event": "keystroke", "timestamp": 2}', b"[1, 2]"]
    log.write_bytes(b"\n".join(lines) + b"\n")
    result = offline.run(log, ["lo_stream.writing.event_count"], user="bo")
    assert result.tables["lo_stream.writing.event_count"] == {"ana": {"count": 1}, "bo": {"count": 1}}
    assert [number for number, _ in result.bad_lines] == [2, 5]
    assert "not JSON" in result.bad_lines[0][1] and "JSON list" in result.bad_lines[1][1]


def fragile(event, state):
    if event["client"].get("bad"):
        raise ValueError("cannot take this one")
    return {"n": state["n"] + 1}


def test_an_event_a_reducer_raises_on_is_reported_and_skipped():
    own = ReducerRegistry()
    student_event_reducer(null_state={"n": 0}, registry=own)(fragile)
    result = offline.run([envelope("ana", event="x"), envelope("ana", event="x", bad=True), envelope("ana", event="x")],
                         [own.get(f"{__name__}.fragile")])
    assert result.tables[f"{__name__}.fragile"] == {"ana": {"n": 2}}
    assert [(e["key"], e["error"]) for e in result.errors] == [("ana", "ValueError: cannot take this one")]


def test_unknown_modules_reducers_and_inputs_are_named():
    with pytest.raises(KeyError, match="no module 'nope' is installed"):
        offline.run([], "nope")
    with pytest.raises(KeyError, match="no reducer 'writing.nope'"):
        offline.run([], ["writing.nope"])
    with pytest.raises(ValueError, match="event 1 has no 'client' object"):
        offline.run([envelope("ana", event="x"), {"event": "x"}], WRITING)
    # The worker's rules, each named as the worker names it in its dead letters.
    for bad, reason in [
        ("not an envelope", "event 1 is a JSON str, not an object"),
        ({"client": "typing", "metadata": {"auth": {"safe_user_id": "ana"}}}, "event 1 has no 'client' object"),
        ({"client": {"event": ["keystroke"]}, "metadata": {"auth": {"safe_user_id": "ana"}}},
         "event 1: client.event is a JSON array, not a string"),
        ({"client": {"event": "keystroke"}, "metadata": {}}, "event 1 has no metadata.auth.safe_user_id"),
    ]:
        with pytest.raises(ValueError, match=re.escape(reason)):
            offline.run([envelope("ana", event="x"), bad], WRITING)
    with pytest.raises(FileNotFoundError, match="no such log file"):
        offline.run("/nonexistent/class.jsonl", WRITING)


def test_the_command_prints_or_saves_the_tables(tmp_path):
    log = tmp_path / "class.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(e) for e in simulated_class(3, 20)) + b"\n")
    printed = lo_stream_command("offline", str(log), "--module", WRITING)
    assert printed.returncode == 0, printed.stderr
    tables = json.loads(printed.stdout)
    assert sum(state["count"] for state in tables["lo_stream.writing.event_count"].values()) == len(log.read_text().splitlines())
    saved = lo_stream_command("offline", str(log), "--reducer", "lo_stream.writing.text", "--output", str(tmp_path / "out.json"))
    assert saved.returncode == 0 and list(json.loads((tmp_path / "out.json").read_text())) == ["lo_stream.writing.text"]
    both = lo_stream_command("offline", str(log), "--module", WRITING, "--reducer", "lo_stream.writing.text")
    assert both.returncode == 1 and "give --module or --reducer, not both" in both.stderr


@pytest.mark.kafka
async def test_offline_tables_equal_the_workers_for_the_same_events(settings, tmp_path):
    await ensure_topics(settings)
    events = simulated_class(students=6, events_each=60)
    # As the gateway would store them: some one per message, some packed per student.
    messages, run = [], []
    for position, event in enumerate(events):
        student = event["metadata"]["auth"]["safe_user_id"]
        if run and (run[-1]["metadata"]["auth"]["safe_user_id"] != student or position % 3 == 0):
            messages.append((run[0]["metadata"]["auth"]["safe_user_id"], encode_message(run)))
            run = []
        run.append(event)
    messages.append((run[0]["metadata"]["auth"]["safe_user_id"], encode_message(run)))
    await produce(settings, messages)

    expected = offline.run(events, WRITING)
    assert not expected.errors
    load_modules()
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    try:
        for reducer in registry.from_module("lo_stream.writing"):
            table = expected.tables[reducer.id]
            assert table, f"{reducer.id}: the simulated class should give it something to do"
            await wait_for_table(settings, reducer.table_name, table, worker, timeout=180, project=state_only)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    count = await read_table(settings, "lo_stream.writing.event_count-v1")
    assert sum(v["state"]["count"] for v in count.values()) == len(events)
