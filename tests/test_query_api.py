"""The query API of a running worker: exports over HTTP and websocket, course-scoped access, audit."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from lo_stream.connectors.rosters import roster_student, write_course
from lo_stream.query import course_query, variable
from lo_stream.query.access import UserStore
from lo_stream.topics import ensure_topics
from tests.support import (
    ServiceProcess,
    assigned_partitions,
    envelope,
    free_port,
    lo_stream_command,
    produce,
    read_topic,
    wait_for_table,
)

pytestmark = pytest.mark.kafka

EVENT_COUNT = "lo_stream.writing.event_count-v1"


async def classroom(settings) -> tuple[dict[str, str], int]:
    """Two courses with their teachers, a few events; returns each user's token, and the offset
    of s1's last event."""
    await ensure_topics(settings)
    users = UserStore(settings.users_file)
    tokens = {
        "rivera": users.add("ms.rivera", "teacher"),  # teaches alg-1 per the course record
        "chen": users.add("mr.chen", "teacher", courses=["bio"]),  # per the users file
        "root": users.add("root", "admin", password="s3cret"),
    }
    await write_course(
        settings, {"course_id": "alg-1", "name": "Algebra 1", "teachers": ["ms.rivera"]},
        [roster_student(f"s{i}", f"Given{i}", f"Family{i}") for i in (1, 2, 3)],
    )
    await write_course(settings, {"course_id": "bio", "name": "Biology", "teachers": []},
                       [roster_student("b1", "Bo", "Lind")])
    events = [("s1", envelope("s1", event="google_docs_save", doc_id="d1", timestamp=1000 + i,
                              bundles=[{"commands": [{"ty": "is", "ibi": 1, "s": "word "}]}])) for i in range(3)]
    events += [("s2", envelope("s2", event="keystroke", timestamp=5000)), ("b1", envelope("b1", event="keystroke", timestamp=1))]
    produced = await produce(settings, events)
    return tokens, max(offset for key, offset in produced if key == "s1")


async def post(http, base, token, body, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(f"{base}/api/query", json=body, headers=headers, **kwargs) as response:
        return response.status, await response.json(content_type=None)


async def http_outcome(http, base: str, token: str | None, course: str) -> str:
    status, answer = await post(http, base, token, {"export": "writing.course_overview", "params": {"course_id": course}})
    return {200: "ok", 401: "unauthenticated", 403: "denied"}.get(status, f"{status}: {answer}")


async def websocket_outcome(http, base: str, token: str | None, course: str) -> str:
    try:
        ws = await http.ws_connect(f"{base}/wsapi/query" + (f"?token={token}" if token else ""))
    except aiohttp.WSServerHandshakeError as refused:
        return "unauthenticated" if refused.status == 401 else f"{refused.status}"
    async with ws:
        await ws.send_str(json.dumps({"subscribe": "m", "export": "writing.course_overview",
                                      "params": {"course_id": course}}))
        reply = json.loads((await ws.receive(timeout=30)).data)
    if reply["type"] == "result":
        return "ok"
    return "denied" if "does not teach" in reply.get("error", "") else str(reply)


def cli_outcome(settings, token: str | None, course: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "LO_STREAM_QUERY_TOKEN"}
    args = ["query", "writing.course_overview", "--param", f"course_id={course}"]
    done = lo_stream_command(*args, *(["--token", token] if token else []), env={**env, **settings.as_env()})
    if done.returncode == 0:
        return "ok"
    if "403" in done.stderr and "does not teach" in done.stderr:
        return "denied"
    if "401" in done.stderr or "give your token" in done.stderr:
        return "unauthenticated"
    return done.stderr


async def test_course_overview_joins_the_roster_and_access_follows_courses(settings, tmp_path):
    tokens, s1_offset = await classroom(settings)
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    base = f"http://127.0.0.1:{settings.worker_port}"
    try:
        await wait_for_table(settings, EVENT_COUNT, {"s1": 3, "s2": 1, "b1": 1}, worker,
                             project=lambda v: v["state"]["count"])
        async with aiohttp.ClientSession() as http:
            overview = {"export": "writing.course_overview", "params": {"course_id": "alg-1"}}
            status, answer = await post(http, base, tokens["rivera"], overview)
            assert status == 200, answer
            rows = {row["key"]["student"]: row for row in answer["result"]}
            assert sorted(rows) == ["s1", "s2", "s3"]  # every student on the roster
            assert rows["s1"]["events"] == 3 and rows["s1"]["full_name"] == "Given1 Family1"
            assert rows["s1"]["last_document"] == "d1" and rows["s1"]["words"] == 3
            assert rows["s1"]["last_active"] == 1002
            assert rows["s3"]["events"] == 0 and rows["s3"]["typing_median_ms"] is None  # no events: defaults
            assert "words" not in rows["s3"]  # no document yet
            count_provenance = rows["s1"]["provenance"][0]
            assert count_provenance["reducer"] == "lo_stream.writing.event_count"
            assert count_provenance["version"] == 1 and count_provenance["key"] == "s1"
            assert count_provenance["offset"] == s1_offset  # the event that last changed it
            assert rows["s3"]["provenance"][0]["offset"] is None

            # The access matrix: every role x every endpoint x own / other course.
            matrix = {}
            for who in ("rivera", "chen", "root", "anonymous", "forged"):
                token = tokens.get(who, "forged-token" if who == "forged" else None)
                for course in ("alg-1", "bio"):
                    matrix[who, "http", course] = await http_outcome(http, base, token, course)
                    matrix[who, "websocket", course] = await websocket_outcome(http, base, token, course)
                    matrix[who, "cli", course] = cli_outcome(settings, token, course)
            allowed = {("rivera", "alg-1"), ("chen", "bio"), ("root", "alg-1"), ("root", "bio")}
            expected = {
                (who, endpoint, course): "unauthenticated" if who in ("anonymous", "forged")
                else "ok" if (who, course) in allowed else "denied"
                for who, endpoint, course in matrix
            }
            assert matrix == expected
            status, answer = await post(http, base, tokens["rivera"],
                                        {"export": "writing.student_text", "params": {"student": "b1", "doc_id": "x"}})
            assert status == 403 and "b1" in answer["error"]  # not on her rosters
            # Basic sign-in with a password works like the token.
            for password, expected in [("s3cret", 200), ("nope", 401)]:
                headers = {"Authorization": aiohttp.encode_basic_auth("root", password)}
                async with http.post(f"{base}/api/query", json=overview, headers=headers) as response:
                    assert response.status == expected

            # Errors name what is wrong.
            status, answer = await post(http, base, tokens["root"], {"export": "writing.nope"})
            assert status == 400 and "no export 'writing.nope'" in answer["error"]
            status, answer = await post(http, base, tokens["root"], {"export": "writing.course_overview"})
            assert status == 400 and answer["error"] == "missing required parameter 'course_id'"
            assert answer["node"] == "roster"
            status, answer = await post(http, base, tokens["root"], {**overview, "params": {"course_id": "x"}})
            assert status == 400 and "course 'x' has no roster" in answer["error"]
            dag = {"query": {"execution_dag": {}}, "returns": "x"}
            status, answer = await post(http, base, tokens["root"], dag)
            assert status == 400 and "LO_STREAM_QUERY_ALLOW_CLIENT_DAGS" in answer["error"]

            async with http.get(f"{base}/api/courses", headers={"Authorization": f"Bearer {tokens['rivera']}"}) as r:
                assert (await r.json())["courses"] == [
                    {"course_id": "alg-1", "name": "Algebra 1", "teachers": ["ms.rivera"], "students": 3}
                ]

        cli = lo_stream_command("query", "writing.course_overview", "--param", "course_id=bio",
                                "--token", tokens["chen"], env={**os.environ, **settings.as_env()})
        assert cli.returncode == 0, cli.stderr
        assert [row["key"]["student"] for row in json.loads(cli.stdout)] == ["b1"]
    finally:
        assert worker.stop() == 0, worker.log_tail()

    audit = [value for _, value in await read_topic(settings, settings.topics.audit, latest_per_key=False)]
    # Every query run, allowed or not (not the unauthenticated ones: nobody to name): the overview,
    # the matrix's 3 roles x 3 endpoints x 2 courses, the refused student, two password sign-ins,
    # four errors and the CLI run.
    assert len(audit) == 1 + 18 + 1 + 1 + 4 + 1
    first = audit[0]
    assert (first["user"], first["query"], first["params"], first["status"], first["students"]) == (
        "ms.rivera", "writing.course_overview", {"course_id": "alg-1"}, "ok", 3,
    )
    assert [a["status"] for a in audit].count("denied") == 2 * 3 + 1


class Subscriber:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: dict) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, timeout: float = 30) -> dict:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        return json.loads(message.data)

    async def update_for(self, student: str) -> dict:
        """The row of the first update holding `student`; every update on the way must be for the
        subscribed course."""
        while True:
            update = await self.next()
            assert update["type"] == "update", update
            rows = {row["key"]["student"]: row for row in update["rows"]}
            assert set(rows) <= {"s1", "s2", "s3", "s4"}, update
            if student in rows:
                return rows[student]

    async def past_updates(self, timeout: float) -> dict:
        """The first message that is not an update, within `timeout` seconds in all. Updates may
        come before it: the worker can still be applying the events the test waited for to tables
        other than the one it watched."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.next(timeout=max(0.0, deadline - loop.time()))
            if message["type"] != "update":
                return message

    async def nothing_for(self, seconds: float) -> None:
        try:
            message = await asyncio.wait_for(self.ws.receive(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected message: {message.data}")


async def metric(http, base: str, name: str) -> float:
    async with http.get(f"{base}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def test_live_subscription_sends_the_result_then_changed_rows(settings, tmp_path):
    tokens, _ = await classroom(settings)
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    base = f"http://127.0.0.1:{settings.worker_port}"
    overview = {"export": "writing.course_overview", "params": {"course_id": "alg-1"}}
    try:
        await wait_for_table(settings, EVENT_COUNT, {"s1": 3, "s2": 1, "b1": 1}, worker,
                             project=lambda v: v["state"]["count"])
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{base}/wsapi/query?token={tokens['rivera']}")
            live = Subscriber(ws)
            await live.send({"subscribe": "overview", **overview})
            first = await live.next()
            assert first["subscription"] == "overview" and first["type"] == "result"
            assert {row["key"]["student"]: row["events"] for row in first["result"]} == {"s1": 3, "s2": 1, "s3": 0}

            # New events: only the changed students' rows come, with their new values.
            await produce(settings, [("s2", envelope("s2", event="keystroke", timestamp=6000 + i)) for i in range(2)])
            row = await live.update_for("s2")
            while row["events"] < 3:  # the two events as two changes, or an update of the first ones still in flight
                row = await live.update_for("s2")
            assert (row["events"], row["full_name"]) == (3, "Given2 Family2")
            # Another course's student changes nothing here (update_for checks every row).
            await produce(settings, [("b1", envelope("b1", event="keystroke", timestamp=2))])
            await produce(settings, [("s3", envelope("s3", event="keystroke", timestamp=7000))])
            assert (await live.update_for("s3"))["events"] == 1

            # A roster reload re-sends the whole result.
            await write_course(
                settings, {"course_id": "alg-1", "name": "Algebra 1", "teachers": ["ms.rivera"]},
                [roster_student(f"s{i}", f"Given{i}", f"Family{i}") for i in (1, 2, 3, 4)],
            )
            seen = []
            while not seen or seen[-1]["type"] != "result" or len(seen[-1]["result"]) != 4:
                seen.append(await live.next())  # the course record may re-send the old roster first
                assert len(seen) < 5 and seen[-1]["type"] in ("result", "update"), seen

            # A subscription to what she may not see is refused on this connection, which stays usable.
            await live.send({"subscribe": "bio", "export": "writing.course_overview", "params": {"course_id": "bio"}})
            refused = await live.next()
            assert refused["type"] == "error" and "does not teach course 'bio'" in refused["error"]

            assert await metric(http, base, "lo_stream_query_subscriptions") == 1
            await live.send({"unsubscribe": "overview"})
            assert await live.next() == {"subscription": "overview", "type": "unsubscribed"}
            await produce(settings, [("s1", envelope("s1", event="keystroke", timestamp=9000))])
            await live.nothing_for(3)
            assert await metric(http, base, "lo_stream_query_subscriptions") == 0

            # A subscriber that just disconnects leaves nothing behind either.
            other = await http.ws_connect(f"{base}/wsapi/query", headers={"Authorization": f"Bearer {tokens['root']}"})
            await other.send_str(json.dumps({"subscribe": "x", **overview}))
            assert json.loads((await other.receive()).data)["type"] == "result"
            assert await metric(http, base, "lo_stream_query_connections") == 2
            await other.close()
            await ws.close()
            for _ in range(50):
                if await metric(http, base, "lo_stream_query_connections") == 0:
                    break
                await asyncio.sleep(0.1)
            assert await metric(http, base, "lo_stream_query_connections") == 0
            assert await metric(http, base, "lo_stream_query_subscriptions") == 0

            with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
                await http.ws_connect(f"{base}/wsapi/query")
            assert anonymous.value.status == 401
    finally:
        assert worker.stop() == 0, worker.log_tail()


async def test_revoking_a_user_ends_their_live_queries_within_seconds(settings, tmp_path):
    tokens, _ = await classroom(settings)
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    base = f"http://127.0.0.1:{settings.worker_port}"
    try:
        await wait_for_table(settings, EVENT_COUNT, {"s1": 3, "s2": 1, "b1": 1}, worker,
                             project=lambda v: v["state"]["count"])
        async with aiohttp.ClientSession() as http:
            subscribers = {}
            for name, auth in (("rivera", {"Authorization": f"Bearer {tokens['rivera']}"}),
                               ("root", {"Authorization": aiohttp.encode_basic_auth("root", "s3cret")}),
                               ("chen", {})):
                url = f"{base}/wsapi/query" + (f"?token={tokens['chen']}" if name == "chen" else "")
                subscribers[name] = Subscriber(await http.ws_connect(url, headers=auth))
                course = "bio" if name == "chen" else "alg-1"
                await subscribers[name].send({"subscribe": "o", "export": "writing.course_overview",
                                              "params": {"course_id": course}})
                assert (await subscribers[name].next())["type"] == "result"
            users = UserStore(settings.users_file)
            users.revoke("ms.rivera")
            users.revoke("root")
            for name, who in (("rivera", "ms.rivera"), ("root", "root")):
                ended = await subscribers[name].past_updates(timeout=15)
                assert ended == {"subscription": None, "type": "error", "node": None,
                                 "error": f"access revoked: {who} is no longer a user here; sign in again"}
                closing = await subscribers[name].ws.receive(timeout=5)
                assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 4403)
            # Mr Chen keeps his: his own course's changes still come.
            await produce(settings, [("b1", envelope("b1", event="keystroke", timestamp=3))])
            update = await subscribers["chen"].next()
            assert update["type"] == "update" and [row["key"]["student"] for row in update["rows"]] == ["b1"]
            assert await metric(http, base, "lo_stream_query_connections") == 1
    finally:
        assert worker.stop() == 0, worker.log_tail()


async def test_a_query_gathers_students_whose_keys_live_on_different_workers(settings, tmp_path):
    await ensure_topics(settings)
    token = UserStore(settings.users_file).add("root", "admin")
    students = [f"st{i:02d}" for i in range(40)]
    await write_course(settings, {"course_id": "big", "name": "Big class", "teachers": []},
                       [roster_student(s, s, "X") for s in students])
    expected = {s: s.count("1") + 1 for s in students}
    await produce(settings, [(s, envelope(s, event="keystroke")) for s, n in expected.items() for _ in range(n)])
    second_settings = settings.model_copy(update={"data_dir": tmp_path / "second", "worker_port": free_port()})
    workers = [ServiceProcess(settings, tmp_path / "first.log").start(),
               ServiceProcess(second_settings, tmp_path / "second.log").start()]
    try:
        await wait_for_table(settings, EVENT_COUNT, expected, workers[0], project=lambda v: v["state"]["count"])
        for _ in range(120):  # until each worker holds part of the partitions
            split = [assigned_partitions(worker, settings) for worker in workers]
            if all(split) and "0-3" not in split:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"the workers did not share the partitions: {split}")
        async with aiohttp.ClientSession() as http:
            for worker_settings in (settings, second_settings):
                base = f"http://127.0.0.1:{worker_settings.worker_port}"
                status, answer = await post(http, base, token,
                                            {"export": "writing.course_overview", "params": {"course_id": "big"}})
                assert status == 200, answer
                assert {row["key"]["student"]: row["events"] for row in answer["result"]} == expected
                assert await metric(http, base, 'lo_stream_query_keys_read_total{where="remote"}') > 0
                assert await metric(http, base, 'lo_stream_query_keys_read_total{where="local"}') > 0
            # Their internal reads used the deployment's own secret (no setting): nobody else can read.
            # (Both may have written one when they started together: each takes the first.)
            secret = (await read_topic(settings, settings.topics.cluster, latest_per_key=False))[0][1]["secret"]
            internal = f"http://127.0.0.1:{settings.worker_port}/api/internal/read"
            body = {"table": EVENT_COUNT, "keys": students}
            for headers in ({}, {"X-LO-Stream-Cluster": "guess"}, {"Authorization": f"Bearer {token}"}):
                async with http.post(internal, json=body, headers=headers) as refused:
                    assert refused.status == 403, headers
                    assert "internal reads are for the deployment's workers" in await refused.text()
            async with http.post(internal, json=body, headers={"X-LO-Stream-Cluster": secret}) as read:
                assert read.status == 200
                values = (await read.json())["values"]
                assert {s: v["state"]["count"] for s, v in values.items() if v} == {
                    s: n for s, n in expected.items() if s in values and values[s]}
                assert values  # the first worker holds some of the students
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.log_tail()


async def test_client_dags_run_when_the_deployment_allows_them(settings, tmp_path):
    settings = settings.model_copy(update={"query_allow_client_dags": True})
    tokens, _ = await classroom(settings)
    worker = ServiceProcess(settings, tmp_path / "worker.log").start()
    base = f"http://127.0.0.1:{settings.worker_port}"
    try:
        await wait_for_table(settings, EVENT_COUNT, {"s1": 3, "s2": 1, "b1": 1}, worker,
                             project=lambda v: v["state"]["count"])
        document = course_query("lo_stream.writing.event_count", {"count": "n"})
        async with aiohttp.ClientSession() as http:
            for _ in range(30):  # the worker's API comes up with it
                try:
                    status, answer = await post(http, base, tokens["rivera"], {
                        "query": document, "returns": "event_count", "params": {"course_id": "alg-1"}})
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(1)
            assert status == 200, answer
            assert {row["key"]["student"]: row["n"] for row in answer["result"]} == {"s1": 3, "s2": 1, "s3": 0}
            # The same rules hold for a hand-made DAG: not her course, not her students.
            status, answer = await post(http, base, tokens["rivera"], {
                "query": document, "returns": "event_count", "params": {"course_id": "bio"}})
            assert status == 403
            cyclic = {"execution_dag": {"a": variable("b"), "b": variable("a")}}
            status, answer = await post(http, base, tokens["rivera"], {"query": cyclic, "returns": "a"})
            assert status == 400 and answer == {"error": "the DAG has a cycle: a -> b -> a", "node": "a"}
    finally:
        assert worker.stop() == 0, worker.log_tail()
