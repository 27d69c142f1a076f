"""`lo-stream replay-file` stores a log's events exactly, in order per student, and names bad lines."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict

import orjson
import pytest

from lo_stream.envelopes import BadLine, Identity, decode_envelopes, parse_log_line
from lo_stream.topics import ensure_topics
from tests.support import envelope, lo_stream_command, read_topic


def test_line_formats():
    ana = envelope("ana", event="keystroke", timestamp=1)
    assert parse_log_line(orjson.dumps(ana), None, "test") == ("ana", ana)
    study_line = orjson.dumps(ana) + b"\t1700000000.25"  # LO's .study.log: envelope, tab, time
    assert parse_log_line(study_line, None, "test") == ("ana", ana)
    student, wrapped = parse_log_line(b'{"event": "keystroke", "timestamp": 3}', Identity.of("bo b", "log"), "test")
    assert student == "bo+b"
    assert wrapped["client"] == {"event": "keystroke", "timestamp": 3}
    assert wrapped["metadata"]["auth"] == {"user_id": "bo b", "safe_user_id": "bo+b", "providence": "log"}


def test_events_naming_their_google_doc_only_as_object_get_its_doc_id_as_in_lo():
    doc = {"id": "1Xy", "url": "https://docs.google.com/document/d/1Xy/edit?tab=t.0", "title": "Essay"}
    raw = orjson.dumps({"event": "keystroke", "object": doc})
    assert parse_log_line(raw, Identity.of("ana", "log"), "test")[1]["client"]["doc_id"] == "1Xy"
    logged = orjson.dumps(envelope("ana", event="visibility", object=doc))
    assert parse_log_line(logged, None, "test")[1]["client"]["doc_id"] == "1Xy"
    home = {"id": "x", "url": "https://docs.google.com/document/u/0/?tgif=d"}  # Docs' home page: no document
    assert "doc_id" not in parse_log_line(orjson.dumps({"event": "visibility", "object": home}),
                                          Identity.of("ana", "log"), "test")[1]["client"]
    kept = orjson.dumps({"event": "google_docs_save", "doc_id": "mine", "object": doc})
    assert parse_log_line(kept, Identity.of("ana", "log"), "test")[1]["client"]["doc_id"] == "mine"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{oops", "not JSON"),
        (b"[1]", "expected a JSON object, found a JSON list"),
        (b'{"client": {"event": "x"}, "metadata": {}}', "without metadata.auth.safe_user_id"),
        (b'{"event": "keystroke"}', "say whose it is with --user"),
        (b'{"what": 1}', 'neither an envelope (no "client") nor an event'),
    ],
)
def test_bad_lines_say_why(line, message):
    with pytest.raises(BadLine, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_log_line(line, None, "test")


async def stored_envelopes(settings) -> list[dict]:
    stored = []
    for key, value in await read_topic(settings, settings.topics.events, latest_per_key=False):
        stored.extend(decode_envelopes(orjson.dumps(value), key.decode()))
    return stored


def per_student(envelopes: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for item in envelopes:
        grouped[item["metadata"]["auth"]["safe_user_id"]].append(item)
    return dict(grouped)


@pytest.mark.kafka
async def test_replay_file_round_trips_a_log_exactly(settings, tmp_path):
    rng = random.Random(5)
    events = [
        envelope(f"s{rng.randrange(20):02d}", event="keystroke", timestamp=1_000 + i, n=i, text="é ✓")
        for i in range(3000)
    ]
    log = tmp_path / "class.log"
    lines = [orjson.dumps(e) + (b"\t1700000000.5" if i % 2 else b"") for i, e in enumerate(events)]
    lines.insert(10, b"{not json")
    lines.insert(20, b"")  # blank lines are skipped, not errors
    lines.insert(30, b'{"event": "keystroke"}')
    log.write_bytes(b"\n".join(lines) + b"\n")
    await ensure_topics(settings)

    replayed = lo_stream_command("replay-file", str(log), env={**os.environ, **settings.as_env()})
    assert replayed.returncode == 1  # some lines were bad
    assert f"{log}:11: not JSON" in replayed.stderr
    assert f"{log}:31: a raw event, not an envelope: say whose it is with --user" in replayed.stderr
    assert "3000 events in" in replayed.stdout and "2 bad lines" in replayed.stdout

    stored = await stored_envelopes(settings)
    assert per_student(stored) == per_student(events)  # every event, unchanged, in order per student
    assert len(stored) == len(events)
    letters = [value for _, value in await read_topic(settings, settings.topics.dead_letters, latest_per_key=False)]
    assert [(letter["line"], letter["raw"]) for letter in letters] == [(11, "{not json"), (31, '{"event": "keystroke"}')]


@pytest.mark.kafka
async def test_paced_replay_of_raw_events_for_one_user(settings, tmp_path):
    log = tmp_path / "ana.jsonl"
    log.write_text("".join(json.dumps({"event": "keystroke", "n": i}) + "\n" for i in range(20)))
    await ensure_topics(settings)
    replayed = lo_stream_command(
        "replay-file", str(log), "--rate", "40", "--user", "ana@school.org", env={**os.environ, **settings.as_env()}
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "20 events in 20 messages" in replayed.stdout  # paced: each event leaves on its own
    seconds = float(replayed.stdout.split(" in ")[2].split("s")[0])
    assert seconds >= 19 / 40  # the 20th event was due 19/40 s after the first
    stored = await stored_envelopes(settings)
    assert [e["client"]["n"] for e in stored] == list(range(20))
    assert {e["metadata"]["auth"]["safe_user_id"] for e in stored} == {"ana@school.org"}
