"""The engine on a real broker: installed modules' reducers run per student (and per document),
every table equals an independent computation, and bad input goes to the dead-letter topic."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import aiohttp
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, envelope, lo_stream_command, produce, read_topic, state_only, wait_for_table

pytestmark = pytest.mark.kafka

def classroom(students: int, events: int, seed: int) -> tuple[list, dict]:
    """Messages for the events topic, and the independent computation of every table."""
    rng = random.Random(seed)
    messages: list = []
    per_student: dict[str, list[dict]] = defaultdict(list)
    for i in range(events):
        student = f"s{rng.randrange(students):03d}"
        kind = rng.choices(["keystroke", "google_docs_save", "word_count", "visibility"], [70, 15, 10, 5])[0]
        client = {
            "event": kind,
            "source": "org.mitros.writing_analytics",
            "timestamp": 1_000_000 + i * 150 + rng.randrange(-400, 400),
            "class_id": f"class-{int(student[1:]) % 3}",
        }
        if kind == "google_docs_save":
            client["doc_id"] = f"doc-{rng.randrange(3)}"
        if kind == "word_count":
            client["words"] = rng.choice([rng.randrange(200), "many"])  # "many" makes the reducer raise
        event = envelope(student, **client)
        per_student[student].append(event)
        if rng.random() < 0.1:  # sometimes a batch of the same student's events in one message
            batch = [event] + [envelope(student, **{**client, "timestamp": client["timestamp"] + k}) for k in (1, 2)]
            per_student[student].extend(batch[1:])
            messages.append((student, batch))
        else:
            messages.append((student, event))

    expected: dict[str, dict] = {
        "count": {}, "typing": {}, "saves": Counter(), "words": {}, "bad_words": 0, "classes": defaultdict(set),
        "class_events": Counter(),
    }
    for student, events_of_student in per_student.items():
        clients = [e["client"] for e in events_of_student]
        expected["count"][student] = {"count": len(clients)}
        edits = sorted(c["timestamp"] for c in clients if c["event"] in ("keystroke", "google_docs_save"))[-10:]
        if edits:
            expected["typing"][student] = {
                "timestamps": edits,
                "median_interval_ms": float(np.median(np.diff(edits))) if len(edits) > 1 else None,
            }
        for c in clients:
            if c["event"] == "google_docs_save":
                expected["saves"][f'["{student}","{c["doc_id"]}"]'] += 1
        words = [c["words"] for c in clients if c["event"] == "word_count"]
        if any(isinstance(w, int) for w in words):
            expected["words"][student] = {"words": sum(w for w in words if isinstance(w, int))}
        expected["bad_words"] += sum(1 for w in words if not isinstance(w, int))
        for c in clients:
            expected["class_events"][c["class_id"]] += 1
            expected["classes"][c["class_id"]].add(student)
    expected["saves"] = {key: {"saves": n} for key, n in expected["saves"].items()}
    expected["classes"] = {
        class_id: {"events": expected["class_events"][class_id], "students": sorted(students)}
        for class_id, students in expected["classes"].items()
    }
    return messages, expected


async def test_installed_module_runs_and_every_table_is_exact(settings, sample_module, tmp_path):
    listing = lo_stream_command("modules")
    assert listing.returncode == 0, listing.stderr
    assert "sample  (lo_sample, from lo-sample-module)" in listing.stdout
    assert "lo_sample.saves_per_document  v1  scope: student, doc_id" in listing.stdout
    assert "lo_sample.class_activity  v1  scope: class_id" in listing.stdout
    assert "lo_stream.writing.typing_speed" in listing.stdout

    # Fetches folded in parts of a few events or messages (the default folds a fetch of single
    # events at once, which every other test runs): parts, packed messages among them, dead
    # letters between them and regrouped scopes must give the very tables computed below.
    settings = settings.model_copy(update={"fold_max_events": 5, "fold_max_messages": 4})
    await ensure_topics(settings)
    messages, expected = classroom(students=60, events=4000, seed=7)
    malformed = [
        ("s000", b"{not json"),
        ("s001", envelope("s002", event="keystroke", timestamp=1)),  # keyed to the wrong student
        ("s003", {"client": "not an object", "metadata": {"auth": {"safe_user_id": "s003"}}}),
    ]
    await produce(settings, messages[:2000] + malformed + messages[2000:])

    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    try:
        for table, values in [
            ("lo_stream.writing.event_count-v1", expected["count"]),
            ("lo_stream.writing.typing_speed-v1", expected["typing"]),
            ("lo_sample.saves_per_document-v1", expected["saves"]),
            ("lo_sample.fragile_word_total-v1", expected["words"]),
            # Keyed by class, not student: regrouped through a repartition topic.
            ("lo_sample.class_activity-v1", expected["classes"]),
        ]:
            await wait_for_table(settings, table, values, worker, project=state_only)
        metrics = await scrape_metrics(settings.worker_port)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    dead = [value for _, value in await read_topic(settings, settings.topics.dead_letters, latest_per_key=False)]
    raised = [d for d in dead if d["reason"] == "reducer raised"]
    assert len(raised) == expected["bad_words"] > 0
    assert {d["reducer"] for d in raised} == {"lo_sample.fragile_word_total"}
    assert all(d["error"].startswith("ValueError: invalid literal for int()") for d in raised)
    assert all(d["raw"]["client"]["words"] == "many" for d in raised)  # the event itself is kept
    reasons = sorted(d["reason"] for d in dead if d["reason"] != "reducer raised")
    assert len(reasons) == 3
    assert reasons[0].startswith("malformed event: not JSON")
    assert "has no 'client' object" in reasons[1]
    assert "is for student 's002' but the message is keyed 's001'" in reasons[2]
    assert next(d for d in dead if "not JSON" in d["reason"])["raw"] == "{not json"

    # The worker's /metrics tells the same story.
    assert metrics['lo_stream_reducer_errors_total{reducer="lo_sample.fragile_word_total"}'] == expected["bad_words"]
    total_events = sum(v["count"] for v in expected["count"].values())
    assert metrics['lo_stream_reducer_events_total{reducer="lo_stream.writing.event_count"}'] == total_events
    assert metrics['lo_stream_dead_letters_total{reason="malformed event"}'] == 3
    assert metrics['lo_stream_dead_letters_total{reason="reducer raised"}'] == expected["bad_words"]
    lags = {name: value for name, value in metrics.items() if name.startswith("lo_stream_consumer_lag{")}
    assert {f'lo_stream_consumer_lag{{partition="{p}",topic="{settings.topics.events}"}}' for p in range(4)} <= set(lags)
    assert all(value == 0 for name, value in lags.items() if settings.topics.events in name)
    assert metrics["process_resident_memory_bytes"] > 0


async def scrape_metrics(port: int) -> dict[str, float]:
    """The worker's Prometheus metrics as {'name{labels}': value}."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_poison_messages_are_dead_lettered_and_their_neighbours_counted(settings, sample_module, tmp_path):
    """Messages that once crashed or stalled the worker: a key that is not UTF-8, an event name that
    is an object or a list, a tombstone, and an event nested 300 deep (it decodes, but no JSON
    encoder writes it back: the reducer that raises on it, the reducer whose state it makes
    unstorable and the class-scoped forward must still dead-letter it, with the bytes as sent).
    Fetches are folded in parts of a few messages, so the unstorable state spans parts."""
    settings = settings.model_copy(update={"fold_max_events": 3, "fold_max_messages": 3})
    await ensure_topics(settings)
    deep = b'{"d":' * 300 + b"1" + b"}" * 300  # orjson reads 1,024 levels, writes 255
    good = [(f"s{i % 10:03d}", envelope(f"s{i % 10:03d}", event="keystroke", timestamp=i, class_id="c1"))
            for i in range(300)]
    # A word count of s004 parts before the deep one: the state after that one cannot be stored.
    good[104] = ("s004", envelope("s004", event="word_count", words=1, class_id="c1", deep="before"))
    poison = [
        (b"\xff\xfe", orjson.dumps(envelope("s000", event="keystroke", timestamp=1))),
        (b"s001", orjson.dumps(envelope("s001", event={"name": "keystroke"}, timestamp=1))),
        (b"s002", orjson.dumps([envelope("s002", event="keystroke"), envelope("s002", event=["keystroke"])])),
        (b"s003", None),
        (b"s004", orjson.dumps(envelope("s004", event="word_count", words="many", class_id="c1", deep="~"))
         .replace(b'"~"', deep)),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        messages = [(k.encode(), orjson.dumps(v)) for k, v in good[:150]] + poison + [
            (k.encode(), orjson.dumps(v)) for k, v in good[150:]]
        for key, value in messages:
            await producer.send_and_wait(settings.topics.events, value, key=key)
    finally:
        await producer.stop()

    expected = dict(Counter(student for student, _ in good))
    expected["s004"] += 1  # the deep event is an event: counted
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    try:
        await wait_for_table(settings, "lo_stream.writing.event_count-v1", {s: {"count": n} for s, n in expected.items()},
                             worker, project=state_only)
        await wait_for_table(settings, "lo_sample.class_activity-v1", {"c1": 300}, worker,
                             project=lambda v: v["state"]["events"])
        # The deep event is not applied where the state after it cannot be stored: the state before it stays.
        await wait_for_table(settings, "lo_sample.kept_detail-v1", {"s004": {"events": 1, "deep": "before"}}, worker,
                             project=state_only)
        await wait_for_table(settings, "lo_sample.fragile_word_total-v1", {"s004": {"words": 1}}, worker,
                             project=state_only)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    dead = [value for _, value in await read_topic(settings, settings.topics.dead_letters, latest_per_key=False)]
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 7, reasons
    assert "malformed event: its key is not UTF-8 text: key events by metadata.auth.safe_user_id" in reasons
    assert "malformed event: the envelope: client.event is a JSON object, not a string" in reasons
    assert "malformed event: envelope 1: client.event is a JSON array, not a string" in reasons
    assert "malformed event: a message without a value (a tombstone) on the events topic" in reasons
    raised = next(d for d in dead if d["reason"] == "reducer raised")
    assert raised["reducer"] == "lo_sample.fragile_word_total" and '"words":"many"' in raised["raw"]
    unstorable = next(d for d in dead if d["reason"] == "reducer state cannot be stored")
    assert unstorable["reducer"] == "lo_sample.kept_detail" and unstorable["raw"] == raised["raw"]
    assert unstorable["key"] == "s004" and "Recursion limit reached" in unstorable["error"]
    forwarded = next(d for d in dead if d["reason"] == "event cannot be forwarded")
    assert forwarded["reducer"] == "lo_sample.class_activity" and forwarded["raw"] == raised["raw"]
