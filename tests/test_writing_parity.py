"""Learning Observer's writing client, events and rosters, end to end: LO's event shapes through
the gateway and the worker give the text, titles, tabs and tags LO's rules give, offline mode gives
the same tables, and an LO roster of test users joins with their events."""

from __future__ import annotations

import json
import os

import aiohttp
import orjson
import pytest

from lo_stream import offline
from lo_stream.envelopes import Identity, decode_envelopes, make_envelope
from lo_stream.modules import load_modules
from lo_stream.query.access import UserStore
from lo_stream.reducers import registry
from lo_stream.topics import ensure_topics
from tests.support import (
    LO_DOC,
    LO_SESSION,
    ServiceProcess,
    free_port,
    lo_stream_command,
    lo_writing_session,
    read_topic,
    state_only,
    wait_for_table,
)

STUDENT = "tc-testcase-Alberta"  # LO: encode_id("tc", "testcase-" + "Alberta")
CLOCK = 1_764_500_000_000


def check_session_tables(tables: dict) -> None:
    """The writing tables of `lo_writing_session`, as LO's rules give them (LO_SESSION)."""
    doc_key = json.dumps([STUDENT, LO_DOC], separators=(",", ":"))
    text = tables["lo_stream.writing.text"][doc_key]
    assert text["text"] == LO_SESSION["text"] and text["words"] == LO_SESSION["words"]
    assert sum(length for _, length in text["unseen_runs"]) == LO_SESSION["unseen"]
    assert {tab: state["text"] for tab, state in text["tabs"].items()} == LO_SESSION["tab_text"]
    documents = tables["lo_stream.writing.documents"][STUDENT]
    assert documents["documents"][LO_DOC]["title"] == LO_SESSION["title"] and documents["last_document"] == LO_DOC
    tabs = tables["lo_stream.writing.tab_list"][doc_key]["tabs"]
    assert {tab: state["title"] for tab, state in tabs.items()} == LO_SESSION["tabs"]
    assert tables["lo_stream.writing.document_tagging"][STUDENT]["tags"] == LO_SESSION["tags"]
    assert tables["lo_stream.writing.student_profile"][STUDENT]["email"] == LO_SESSION["email"]
    assert tables["lo_stream.writing.tab_time_on_task"][json.dumps([STUDENT, LO_DOC, "t.notes"], separators=(",", ":"))]


def test_lo_shaped_events_give_lo_text_titles_tabs_and_tags_offline():
    events = [make_envelope(event, Identity.test_case("Alberta")) for event in lo_writing_session(CLOCK)]
    result = offline.run(events, "writing")
    assert not result.errors
    check_session_tables(result.tables)


async def send_as_lo_client(url: str, events: list[dict]) -> None:
    """LO's protocol: the test identity, then one event per frame; wait until all are stored."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"event": "test_framework_fake_identity", "user_id": "Alberta"}))
        for event in events:
            await ws.send_str(json.dumps(event))
        stored = 0
        while stored < len(events) + 1:
            reply = json.loads((await ws.receive(timeout=60)).data)
            assert reply["status"] in ("auth", "ack"), reply
            if reply["status"] == "ack":
                stored = reply["seq"]


@pytest.mark.kafka
async def test_lo_client_roster_and_events_through_gateway_and_worker(settings, tmp_path):
    settings = settings.model_copy(update={"gateway_port": free_port(), "gateway_insecure_identity": True})
    await ensure_topics(settings)
    roster = tmp_path / "roster.json"  # LO's roster format, listing its test user by LO's key
    roster.write_text(json.dumps([{"user_id": STUDENT, "profile": {
        "name": {"given_name": "Alberta", "family_name": "Lin", "full_name": "Alberta Lin"},
        "email_address": "alberta@school.org"}}]))
    loaded = lo_stream_command("rosters", "load", str(roster), "--course", "lo-class",
                               env={**os.environ, **settings.as_env()})
    assert loaded.returncode == 0, loaded.stderr
    token = UserStore(settings.users_file).add("root", "admin")
    gateway = ServiceProcess(settings, tmp_path / "gateway.log", ServiceProcess.GATEWAY).start()
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    try:
        await gateway.wait_until_serving(f"http://127.0.0.1:{settings.gateway_port}/healthz")
        await send_as_lo_client(f"ws://127.0.0.1:{settings.gateway_port}/wsapi/in/", lo_writing_session(CLOCK))
        stored = []
        for key, value in await read_topic(settings, settings.topics.events, latest_per_key=False):
            assert key.decode() == STUDENT
            stored.extend(decode_envelopes(orjson.dumps(value), STUDENT))
        assert all(e["metadata"]["auth"]["providence"] == "tc" for e in stored)
        assert all(e["client"]["doc_id"] == LO_DOC for e in stored)  # keystrokes got it from `object`, as in LO

        expected = offline.run(stored, "writing")
        check_session_tables(expected.tables)
        load_modules()
        for reducer in registry.from_module("lo_stream.writing"):  # the worker: byte for byte what offline gives
            await wait_for_table(settings, reducer.table_name, expected.tables[reducer.id], worker, project=state_only)

        body = {"export": "writing.course_overview", "params": {"course_id": "lo-class"}}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{settings.worker_port}/api/query", json=body,
                                 headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200, await response.text()
                [row] = (await response.json())["result"]
        assert row["key"]["student"] == STUDENT and row["full_name"] == "Alberta Lin"
        assert row["documents"][row["last_document"]]["title"] == LO_SESSION["title"]
        assert row["words"] == LO_SESSION["words"] and row["events"] == len(stored)
    finally:
        assert worker.stop() == 0, worker.log_tail()
        gateway.stop()
