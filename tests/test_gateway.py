"""The ingest gateway speaks Learning Observer's websocket protocol and stores events in Kafka.

Real gateway processes, a real websocket/HTTP client (aiohttp) and the session's real broker.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

import aiohttp
import orjson
import pytest

from lo_stream.connectors.auth import TokenStore
from lo_stream.connectors.exceptions import TokenFileError
from lo_stream.connectors.gateway import RejectedEvent, validate_event
from lo_stream.connectors.producer import pack
from lo_stream.envelopes import decode_envelopes
from lo_stream.topics import ensure_topics
from tests.support import ServiceProcess, free_port, lo_stream_command, read_topic

SOURCE = "org.mitros.writing_analytics"


# -- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason", "words"),
    [
        ([1, 2], "not_an_object", "JSON array"),
        ({"timestamp": 1}, "missing_field", '"event"'),
        ({"event": 7}, "wrong_type", "non-empty string, not number"),
        ({"event": "x", "timestamp": "yesterday"}, "wrong_type", '"timestamp" must be a number'),
        ({"event": "x", "timestamp": True}, "wrong_type", "not boolean"),
        ({"event": "x", "source": None}, "wrong_type", '"source" must be a string, not null'),
    ],
)
def test_invalid_events_are_named(value, reason, words):
    with pytest.raises(RejectedEvent) as raised:
        validate_event(value)
    assert raised.value.reason == reason
    assert words in str(raised.value)


def test_valid_event_passes_unchanged():
    event = {"event": "google_docs_save", "timestamp": 1700000000000.5, "doc_id": "d", "extra": [1]}
    assert validate_event(event) is event


def test_packing_keeps_order_and_size():
    envelopes = [{"n": i, "pad": "x" * 100} for i in range(50)]
    runs = pack(envelopes, limit=1000)
    assert [e for run in runs for e in run] == envelopes
    assert all(len(orjson.dumps(run)) <= 1000 for run in runs)
    assert pack([{"big": "y" * 5000}], limit=1000) == [[{"big": "y" * 5000}]]  # alone, not dropped


def test_tokens_are_stored_hashed_and_revocable(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    token = store.add("ana@school.org", name="ana-laptop")
    assert token not in (tmp_path / "tokens.json").read_text()
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert store.identify(token).safe_user_id == "ana@school.org"
    with pytest.raises(TokenFileError, match="exists"):
        store.add("someone", name="ana-laptop")
    # Another process (the CLI) revokes it: the running gateway's store sees the file change.
    assert TokenStore(tmp_path / "tokens.json").revoke("ana-laptop")
    assert store.identify(token) is None


def test_broken_tokens_file_is_named(tmp_path):
    (tmp_path / "tokens.json").write_text('{"tokens": [{"name": "x"}]}')
    with pytest.raises(TokenFileError, match=r"entry 0 lacks user_id, sha256"):
        TokenStore(tmp_path / "tokens.json").identify("anything")


def test_tokens_command_line(tmp_path):
    env = {"LO_STREAM_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    added = lo_stream_command("tokens", "add", "ana@school.org", "--name", "ana", env=env)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert TokenStore(tmp_path / "gateway-tokens.json").identify(token).user_id == "ana@school.org"
    listed = lo_stream_command("tokens", "list", env=env)
    assert "ana  user: ana@school.org" in listed.stdout and token not in listed.stdout
    assert lo_stream_command("tokens", "revoke", "ana", env=env).returncode == 0
    again = lo_stream_command("tokens", "revoke", "ana", env=env)
    assert again.returncode != 0 and "no token named 'ana'" in again.stderr


# -- against a running gateway ---------------------------------------------------------------


class Client:
    """A websocket client that keeps every reply the gateway sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.replies: list[dict] = []

    async def send(self, event: Any) -> None:
        await self.ws.send_str(event if isinstance(event, str) else json.dumps(event))

    async def until(self, done: Callable[[dict], bool], timeout: float = 30) -> dict:
        for reply in self.replies:
            if done(reply):
                return reply
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, f"connection ended: {message}"
                reply = json.loads(message.data)
                self.replies.append(reply)
                if done(reply):
                    return reply

    async def acked(self, seq: int) -> None:
        await self.until(lambda r: r.get("status") == "ack" and r["seq"] >= seq)

    def errors(self) -> dict[int, str]:
        return {r["seq"]: r["reason"] for r in self.replies if r.get("status") == "error"}


@pytest.fixture
async def start_gateway(tmp_path: Path):
    """Start `lo-stream gateway` with given settings; return (settings, base URL). Stopped at the end."""
    started: list[ServiceProcess] = []

    async def start(settings, **overrides):
        settings = settings.model_copy(update={"gateway_port": free_port(), **overrides})
        await ensure_topics(settings)
        process = ServiceProcess(settings, tmp_path / f"gateway-{len(started)}.log", ServiceProcess.GATEWAY).start()
        started.append(process)
        base = f"http://127.0.0.1:{settings.gateway_port}"
        await process.wait_until_serving(f"{base}/healthz")
        return process, base

    yield start
    for process in started:
        if process.process.poll() is None:
            process.stop()


async def stored_events(settings) -> list[tuple[str, dict]]:
    """Every envelope in the events topic, with its message key, in topic order."""
    stored = []
    for key, value in await read_topic(settings, settings.topics.events, latest_per_key=False):
        stored.extend((key.decode(), envelope) for envelope in decode_envelopes(orjson.dumps(value), key.decode()))
    return stored


async def dead_letters(settings) -> list[dict]:
    return [value for _, value in await read_topic(settings, settings.topics.dead_letters, latest_per_key=False)]



@pytest.mark.kafka
async def test_session_with_locked_fields_and_auth_lands_envelopes(settings, start_gateway):
    token = TokenStore(settings.gateway_tokens_file).add("ana@school.org")
    _, base = await start_gateway(settings)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/wsapi/in/") as ws:
        client = Client(ws)
        await client.send({"event": "lock_fields", "fields": {"source": SOURCE, "doc_id": "doc-1"}})
        await client.send({"event": "keystroke", "timestamp": 1000, "n": 1})
        await client.send({"event": "keystroke", "timestamp": 1001, "n": 2, "doc_id": "elsewhere"})
        await client.acked(1)  # the lock_fields frame; the events wait for authentication
        assert await stored_events(settings) == []
        await client.send({"event": "auth_token", "token": token})
        assert await client.until(lambda r: r["status"] == "auth") == {"status": "auth", "user_id": "ana@school.org"}
        await client.send({"event": "keystroke", "timestamp": 1002, "n": 3})
        await client.acked(5)
        assert not client.errors()

    stored = await stored_events(settings)
    assert [key for key, _ in stored] == ["ana@school.org"] * 3
    assert [envelope["client"] for _, envelope in stored] == [
        {"event": "keystroke", "timestamp": 1000 + i, "n": i + 1, "source": SOURCE, "doc_id": "doc-1"} for i in range(3)
    ]  # held events kept their order; locked fields win over the event's own
    for _, envelope in stored:
        assert envelope["metadata"]["auth"] == {
            "user_id": "ana@school.org", "safe_user_id": "ana@school.org", "providence": "token",
        }
        assert envelope["server"]["executable"] == "lo_stream.gateway"
        assert envelope["server"]["time"] > 1.7e9


@pytest.mark.kafka
async def test_a_token_in_the_url_is_not_written_to_the_access_log(settings, start_gateway):
    token = TokenStore(settings.gateway_tokens_file).add("ana@school.org")
    gateway, base = await start_gateway(settings)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/wsapi/in/?token={token}&v=2") as ws:
        client = Client(ws)
        await client.send({"event": "keystroke", "timestamp": 1})
        await client.acked(1)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz?access_token={token}") as answer:
        assert answer.status == 200
    gateway.stop()
    log = gateway.log_file.read_text()
    assert "GET /wsapi/in/?token=<redacted>&v=2 HTTP/1.1" in log and "GET /healthz?access_token=<redacted>" in log
    assert token not in log
    assert [key for key, _ in await stored_events(settings)] == ["ana@school.org"]


@pytest.mark.kafka
async def test_fake_identity_only_in_development_mode(settings, start_gateway):
    identify = {"event": "test_framework_fake_identity", "source": SOURCE, "user_id": "Bob Smith"}
    secure_gateway, secure = await start_gateway(settings)
    _, insecure = await start_gateway(settings, gateway_insecure_identity=True)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{secure}/wsapi/in/") as ws:
            refused = Client(ws)
            await refused.send(identify)
            reply = await refused.until(lambda r: r["status"] == "error")
            assert reply["reason"] == "insecure_identity_disabled"
            assert "LO_STREAM_GATEWAY_INSECURE_IDENTITY" in reply["message"]
            await refused.send(identify)  # a client trying again on the same connection
            await refused.until(lambda r: r["status"] == "error" and r["seq"] == 2)
        async with http.ws_connect(f"{insecure}/wsapi/in/") as ws:
            accepted = Client(ws)
            await accepted.send(identify)
            await accepted.send({"event": "metadata_finished"})
            await accepted.send({"event": "keystroke", "n": 1})
            assert (await accepted.until(lambda r: r["status"] == "auth"))["user_id"] == "testcase-Bob Smith"
            await accepted.acked(3)
    [(key, envelope)] = await stored_events(settings)
    # Learning Observer's test identity: user id "testcase-<id>", key encode_id("tc", it), providence "tc"
    assert key == "tc-testcase-Bob+Smith"
    assert envelope["metadata"]["auth"] == {
        "user_id": "testcase-Bob Smith", "safe_user_id": "tc-testcase-Bob+Smith", "providence": "tc",
    }
    letters = await dead_letters(settings)
    assert len(letters) == 2 and all(json.loads(letter["raw"]) == identify for letter in letters)
    assert all(letter["reason"].startswith("insecure_identity_disabled") and letter["stage"] == "gateway"
               for letter in letters)
    # The operator sees it too: once per connection, with the reason and what to do.
    refusals = [line for line in secure_gateway.log_file.read_text().splitlines() if "refused the identity" in line]
    assert len(refusals) == 1, refusals
    assert "(insecure_identity_disabled)" in refusals[0] and "LO_STREAM_GATEWAY_INSECURE_IDENTITY" in refusals[0]


@pytest.mark.kafka
async def test_bad_input_is_answered_and_dead_lettered_while_good_events_arrive(settings, start_gateway):
    _, base = await start_gateway(settings, gateway_insecure_identity=True, gateway_max_event_bytes=2048)
    frames = [
        {"event": "test_framework_fake_identity", "user_id": "ana"},
        {"event": "keystroke", "n": 1},
        "{not json",
        "[1, 2]",
        {"timestamp": 5},
        {"event": "keystroke", "timestamp": "yesterday"},
        {"event": "keystroke", "pad": "x" * 3000},
        {"event": "lock_fields", "fields": "doc-1"},
        {"event": "auth_token", "token": "guessed"},
        {"event": "keystroke", "n": 2},
    ]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base}/wsapi/in/") as ws:
            client = Client(ws)
            for frame in frames:
                await client.send(frame)
            await client.acked(len(frames))
        async with http.get(f"{base}/metrics") as response:
            metrics = await response.text()

    expected = {
        3: "invalid_json", 4: "not_an_object", 5: "missing_field", 6: "wrong_type", 7: "too_large",
        8: "wrong_type", 9: "unknown_token",
    }
    assert client.errors() == expected
    assert [envelope["client"].get("n") for _, envelope in await stored_events(settings)] == [1, 2]
    letters = await dead_letters(settings)
    assert [letter["seq"] for letter in letters] == list(expected)
    assert [letter["reason"].split(":")[0] for letter in letters] == list(expected.values())
    assert letters[0]["raw"] == "{not json"
    assert json.loads(letters[4]["raw"])["pad"] == "x" * 3000
    assert all(letter["user_id"] == "testcase-ana" for letter in letters)
    assert 'lo_stream_gateway_events_rejected_total{reason="wrong_type"} 2.0' in metrics
    assert 'lo_stream_gateway_events_accepted_total{transport="websocket"} 2.0' in metrics


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.kafka
async def test_locked_fields_are_checked_and_bounded_and_deep_events_refused_alone(settings, start_gateway):
    """Findings 1-3 of the hostile-input review: a lock_fields that would poison every later event,
    one that grows without bound, and an event too deep to store again."""
    _, base = await start_gateway(settings, gateway_insecure_identity=True, gateway_max_event_bytes=2048)
    frames = [
        {"event": "test_framework_fake_identity", "user_id": "ana"},
        {"event": "lock_fields", "fields": {"event": []}},  # every later event's type a list
        {"event": "lock_fields", "fields": {"timestamp": "soon", "doc_id": "d1"}},
        {"event": "lock_fields", "fields": {"doc_id": "d1", "pad": "x" * 1200}},
        {"event": "keystroke", "n": 1},
        {"event": "lock_fields", "fields": {"pad2": "y" * 1200}},  # together over one event's limit
        json.dumps({"event": "keystroke", "n": 2, "deep": deep(300)}),  # parses, cannot be encoded again
        {"event": "keystroke", "n": 3, "deep": deep(20)},
    ]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base}/wsapi/in/", max_msg_size=0) as ws:
            client = Client(ws)
            for frame in frames:
                await client.send(frame)
            await client.acked(len(frames))
    assert client.errors() == {2: "wrong_type", 3: "wrong_type", 6: "too_large", 7: "too_deep"}
    stored = [envelope["client"] for _, envelope in await stored_events(settings)]
    assert [(event["n"], event["event"], event["doc_id"], len(event["pad"])) for event in stored] == [
        (1, "keystroke", "d1", 1200), (3, "keystroke", "d1", 1200)]
    assert stored[1]["deep"] == deep(20)
    letters = await dead_letters(settings)
    assert [(letter["seq"], letter["reason"].split(":")[0]) for letter in letters] == [
        (2, "wrong_type"), (3, "wrong_type"), (6, "too_large"), (7, "too_deep")]
    assert '"event" must be a non-empty string, not array' in letters[0]["reason"]
    assert "locked fields would total" in letters[2]["reason"]


@pytest.mark.kafka
async def test_an_event_kafka_refuses_as_too_large_is_answered_and_dead_lettered_alone(settings, start_gateway):
    """A deployment may allow events larger than a Kafka message can be: the one Kafka refuses
    is answered and dead-lettered (a sample of it), not retried for ever, and its neighbours are stored."""
    _, base = await start_gateway(settings, gateway_insecure_identity=True, gateway_max_event_bytes=4 * 1024 * 1024)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base}/wsapi/in/", max_msg_size=0) as ws:
            client = Client(ws)
            await client.send({"event": "test_framework_fake_identity", "user_id": "ana"})
            await client.send({"event": "keystroke", "n": 1})
            await client.send({"event": "keystroke", "n": 2, "pad": "x" * (1536 * 1024)})
            await client.send({"event": "keystroke", "n": 3})
            await client.acked(4)
    [(seq, reason)] = client.errors().items()
    assert (seq, reason) == (3, "too_large")
    assert [envelope["client"]["n"] for _, envelope in await stored_events(settings)] == [1, 3]
    [letter] = await dead_letters(settings)
    assert letter["reason"].startswith("too_large: Kafka refused the event as too large")
    assert letter["raw_truncated"] and letter["raw_bytes"] > 1536 * 1024


@pytest.mark.kafka
async def test_an_event_too_deep_to_store_is_refused_alone_over_http(settings, start_gateway):
    token = TokenStore(settings.gateway_tokens_file).add("ana")
    _, base = await start_gateway(settings)
    body = b"[" + b",".join([b'{"event": "save", "n": 1}', orjson.dumps({"event": "save", "deep": deep(10)}),
                             b'{"event": "save", "deep": ' + b"[" * 500 + b"]" * 500 + b"}",
                             b'{"event": "save", "n": 2}']) + b"]"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/events", data=body, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            answer = await response.json()
    assert [(r["status"], r.get("reason")) for r in answer["results"]] == [
        ("accepted", None), ("accepted", None), ("rejected", "too_deep"), ("accepted", None)]
    assert [envelope["client"].get("n") for _, envelope in await stored_events(settings)] == [1, None, 2]


@pytest.mark.kafka
async def test_unauthenticated_connections_are_bounded_in_bytes_number_and_time(settings, start_gateway):
    """Finding 4: what a client without credentials can make the gateway hold."""
    gateway, base = await start_gateway(settings, gateway_max_held_bytes=4096, gateway_max_unauthenticated_connections=2,
                                        gateway_auth_timeout_s=3)
    async with aiohttp.ClientSession() as http:
        first = Client(await http.ws_connect(f"{base}/wsapi/in/"))
        for n in range(6):
            await first.send({"event": "keystroke", "n": n, "pad": "x" * 1000})
        refused = await first.until(lambda r: r["status"] == "error")
        assert refused["reason"] == "not_authenticated" and "LO_STREAM_GATEWAY_MAX_HELD_BYTES" in refused["message"]
        second = await http.ws_connect(f"{base}/wsapi/in/")
        with pytest.raises(aiohttp.WSServerHandshakeError) as third:
            await http.ws_connect(f"{base}/wsapi/in/")
        assert third.value.status == 503
        token = TokenStore(settings.gateway_tokens_file).add("ana")
        with_token = Client(await http.ws_connect(f"{base}/wsapi/in/?token={token}"))  # a token is always let in
        assert (await with_token.until(lambda r: r["status"] == "auth"))["user_id"] == "ana"
        # Not authenticated in time: told so, closed, and what it sent is dead-lettered.
        timed_out = await first.until(lambda r: "LO_STREAM_GATEWAY_AUTH_TIMEOUT_S" in r.get("message", ""), timeout=10)
        assert timed_out["reason"] == "not_authenticated"
        closed = await first.ws.receive(timeout=5)
        assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 4401)
        await second.close()
        for _ in range(50):  # closed connections leave the count
            async with http.get(f"{base}/healthz") as health:
                if (open_now := (await health.json())["connections"]) == 1:
                    break
            await asyncio.sleep(0.1)
        assert open_now == 1
        await with_token.ws.close()
    letters = await dead_letters(settings)
    held = [letter["seq"] for letter in letters if letter["reason"].startswith("not_authenticated: the connection closed")]
    assert held == [1, 2, 3]  # 3 events of 1 KB fit in 4 KB; the next three were refused at once
    assert [letter["seq"] for letter in letters if "LO_STREAM_GATEWAY_MAX_HELD_BYTES" in letter["reason"]] == [4, 5, 6]


@pytest.mark.kafka
async def test_events_of_a_connection_that_never_authenticates_are_dead_lettered(settings, start_gateway):
    _, base = await start_gateway(settings)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/wsapi/in/") as ws:
        await ws.send_str(json.dumps({"event": "keystroke", "n": 1}))
        await asyncio.sleep(0.5)
    for _ in range(50):  # the gateway writes them once it sees the connection close
        letters = await dead_letters(settings)
        if letters:
            break
        await asyncio.sleep(0.2)
    [letter] = letters
    assert letter["reason"] == "not_authenticated: the connection closed before it authenticated"
    assert json.loads(letter["raw"]) == {"event": "keystroke", "n": 1}
    assert await stored_events(settings) == []


@pytest.mark.kafka
async def test_http_batches_report_each_event(settings, start_gateway):
    token = TokenStore(settings.gateway_tokens_file).add("ana@school.org")
    _, base = await start_gateway(settings)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        array = [{"event": "save", "n": 1}, {"nope": 1}, {"event": "save", "n": 2}]
        async with http.post(f"{base}/api/events", json=array, headers=auth) as response:
            assert response.status == 200
            answer = await response.json()
        assert (answer["accepted"], answer["rejected"]) == (2, 1)
        assert answer["results"][1] == {
            "index": 1, "status": "rejected", "reason": "missing_field",
            "message": 'the event has no "event" field (its type, e.g. "keystroke")',
        }
        lines = b'{"event": "save", "n": 3}\n{broken\n\n{"event": "save", "n": 4}\n'
        async with http.post(f"{base}/api/events", data=lines, headers=auth) as response:
            answer = await response.json()
        assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "accepted"]
        assert answer["results"][1]["reason"] == "invalid_json"

        async with http.post(f"{base}/api/events", json=array) as response:
            assert response.status == 401
            assert (await response.json())["reason"] == "missing_token"
        async with http.post(f"{base}/api/events", json=array, headers={"Authorization": "Bearer guessed"}) as response:
            assert response.status == 401
            assert "lo-stream tokens add" in (await response.json())["message"]

    stored = await stored_events(settings)
    assert [envelope["client"]["n"] for _, envelope in stored] == [1, 2, 3, 4]
    assert {key for key, _ in stored} == {"ana@school.org"}
    reasons = [letter["reason"].split(":")[0] for letter in await dead_letters(settings)]
    assert reasons == ["missing_field", "invalid_json", "missing_token", "unknown_token"]


@pytest.mark.kafka
async def test_killing_the_gateway_loses_no_acknowledged_event(settings, start_gateway):
    token = TokenStore(settings.gateway_tokens_file).add("ana")
    gateway, base = await start_gateway(settings)
    acked = 0
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{base}/wsapi/in/", headers={"Authorization": f"Bearer {token}"})

        async def send_forever() -> None:
            n = 0
            while True:
                n += 1  # the n-th frame: its seq
                await ws.send_str(json.dumps({"event": "keystroke", "n": n}))
                if n % 50 == 0:
                    await asyncio.sleep(0)

        sender = asyncio.create_task(send_forever())
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                reply = json.loads(message.data)
                if reply["status"] == "ack":
                    acked = reply["seq"]
                    if acked >= 2000 and gateway.process.poll() is None:
                        gateway.kill()  # mid-stream: the client is still sending
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await ws.close()

    stored = [envelope["client"]["n"] for _, envelope in await stored_events(settings)]
    assert acked >= 2000
    assert set(range(1, acked + 1)) <= set(stored), "an acknowledged event is missing"
    assert stored == sorted(stored)  # in the order sent, without duplicates
    assert len(stored) == len(set(stored))
