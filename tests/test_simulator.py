"""`lo-stream simulate` drives the writing tables to what its students typed."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

import orjson
import pytest

from lo_stream.connectors.simulator import Typist, invent_class
from lo_stream.envelopes import decode_envelopes
from lo_stream.tables.rosters import RosterTable
from lo_stream.google_docs import Document
from tests.support import ServiceProcess, free_port, lo_stream_command, read_topic, wait_for_table

EVENT_COUNT = "lo_stream.writing.event_count-v1"
TEXT = "lo_stream.writing.text-v2"


def test_the_same_seed_invents_the_same_class():
    first, again = invent_class(30, seed=4), invent_class(30, seed=4)
    assert [s.user_id for s in first] == [s.user_id for s in again]
    assert len({s.user_id for s in first}) == 30
    assert [s.user_id for s in invent_class(30, seed=5)] != [s.user_id for s in first]


def test_keystrokes_rebuild_the_typed_text():
    """Replaying a typist's events through Google Docs' command semantics gives its own account."""
    [student] = invent_class(1, seed=1)
    typist = Typist(student, random.Random(2), ici=0.1)
    texts: dict[str, str] = {}
    kinds = set()
    for _ in range(3000):
        event = typist.next_event()
        command = event["bundles"][0]["commands"][0]
        kinds.add(command["ty"])
        texts.setdefault(event["doc_id"], Document()).apply(command)
        assert event["object"]["title"] == student.titles[event["doc_id"]]  # as LO's extension sends it
    assert {doc: text.text for doc, text in texts.items()} == student.texts
    assert kinds == {"is", "ds"}  # typos are typed and corrected
    assert student.events == 3000
    assert all(student.plans[doc].startswith(text.text) for doc, text in texts.items())


@pytest.mark.kafka
async def test_simulated_class_through_the_gateway_matches_the_tables(settings, tmp_path):
    settings = settings.model_copy(update={"gateway_port": free_port(), "gateway_insecure_identity": True})
    gateway = ServiceProcess(settings, tmp_path / "gateway.log", ServiceProcess.GATEWAY).start()
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    try:
        await gateway.wait_until_serving(f"http://127.0.0.1:{settings.gateway_port}/healthz")
        summary_path = tmp_path / "summary.json"
        simulated = lo_stream_command(
            "simulate", "--students", "10", "--ici", "0.02", "--duration", "6", "--seed", "3",
            "--course", "period-2", "--teacher", "ms.rivera", "--summary", str(summary_path),
            env={**os.environ, **settings.as_env()},
        )
        assert simulated.returncode == 0, simulated.stderr + gateway.log_tail()
        summary = json.loads(summary_path.read_text())
        assert len(summary) == 10
        assert sum(s["events"] for s in summary.values()) > 1000

        await wait_for_table(
            settings, EVENT_COUNT, {student: s["events"] for student, s in summary.items()}, worker,
            project=lambda v: v["state"]["count"],
        )
        expected_texts = {
            json.dumps([student, doc], separators=(",", ":")): text
            for student, s in summary.items()
            for doc, text in s["documents"].items()
        }
        await wait_for_table(settings, TEXT, expected_texts, worker, project=lambda v: v["state"]["text"])
    finally:
        assert worker.stop() == 0, worker.log_tail()
        gateway.stop()

    async with RosterTable(settings) as rosters:
        roster = rosters.students("period-2")
        assert sorted(s["safe_user_id"] for s in roster) == sorted(summary)
        assert all(s["given_name"] and s["family_name"] for s in roster)
        assert rosters.courses_taught_by("ms.rivera") == ["period-2"]


@pytest.mark.kafka
async def test_simulator_says_what_to_do_when_the_gateway_refuses_it(settings, tmp_path):
    settings = settings.model_copy(update={"gateway_port": free_port()})  # secure: no development identity
    gateway = ServiceProcess(settings, tmp_path / "gateway.log", ServiceProcess.GATEWAY).start()
    try:
        await gateway.wait_until_serving(f"http://127.0.0.1:{settings.gateway_port}/healthz")
        refused = lo_stream_command(
            "simulate", "--students", "2", "--duration", "3", env={**os.environ, **settings.as_env()}
        )
    finally:
        gateway.stop()
    assert refused.returncode != 0
    assert "start it with --insecure-identity" in refused.stderr and "--direct" in refused.stderr


@pytest.mark.kafka
async def test_direct_mode_writes_every_keystroke_to_kafka(settings, tmp_path):
    summary_path = tmp_path / "summary.json"
    simulated = lo_stream_command(
        "simulate", "--students", "3", "--ici", "0.01", "--duration", "2", "--direct", "--summary", str(summary_path),
        env={**os.environ, **settings.as_env()},
    )
    assert simulated.returncode == 0, simulated.stderr
    summary = json.loads(summary_path.read_text())
    stored = Counter()
    for key, value in await read_topic(settings, settings.topics.events, latest_per_key=False):
        for envelope in decode_envelopes(orjson.dumps(value), key.decode()):
            assert envelope["client"]["event"] == "google_docs_save"
            assert envelope["metadata"]["auth"]["providence"] == "tc"  # LO's test identity, as through the gateway
            stored[key.decode()] += 1
    assert stored == {student: s["events"] for student, s in summary.items()}
