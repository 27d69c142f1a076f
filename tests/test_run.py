"""`lo-stream run` (what `make run` calls) brings up a worker and a gateway that work together."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import aiohttp
import psutil
import pytest

from tests.support import ServiceProcess, free_port, wait_for_table

EVENT_COUNT = "lo_stream.writing.event_count-v1"

pytestmark = pytest.mark.kafka


async def test_run_brings_up_the_whole_stack_and_stops_cleanly(settings, tmp_path):
    settings = settings.model_copy(update={"gateway_port": free_port(), "dashboard_port": free_port()})
    log = tmp_path / "run.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lo_stream", "run", "--students", "2"], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **settings.as_env()},
        )
    run = ServiceProcess(settings, log)
    run.process = process
    try:
        await run.wait_until_serving(f"http://127.0.0.1:{settings.gateway_port}/healthz")
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"http://127.0.0.1:{settings.gateway_port}/wsapi/in/") as ws:
                await ws.send_str(json.dumps({"event": "test_framework_fake_identity", "user_id": "ana"}))
                for n in range(3):
                    await ws.send_str(json.dumps({"event": "keystroke", "timestamp": n}))
                while (reply := json.loads((await ws.receive()).data)).get("seq", 0) < 4:
                    assert reply["status"] in ("auth", "ack"), reply
        # The simulated class types through the same gateway, and the dev teacher sees it.
        password = re.search(r"sign in as teacher / (\S+)\)", log.read_text()).group(1)
        rows = await until_class_typing(settings, password, run)
        assert len(rows) == 2 and all(row["events"] > 0 and row["full_name"] for row in rows)
        await wait_for_table(settings, EVENT_COUNT, {"tc-testcase-ana": 3}, run,
                             project=lambda v: v["state"]["count"], keys={"tc-testcase-ana"})
        dashboard = f"http://127.0.0.1:{settings.dashboard_port}"
        await run.wait_until_serving(f"{dashboard}/login")  # Panel takes its time to import on a busy machine
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies for 127.0.0.1
            async with http.post(f"{dashboard}/login", data={"username": "teacher", "password": password}) as signed:
                assert signed.status == 200 and "/login" not in str(signed.url)
            async with http.get(f"{dashboard}/overview?course=demo-class") as page:
                assert page.status == 200 and "/login" not in str(page.url)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=90)
    assert code == 0, run.log_tail()
    output = log.read_text()
    assert "DEVELOPMENT MODE: the gateway accepts test_framework_fake_identity" in output
    assert "stopping Kafka" not in output  # a configured broker is not ours to stop
    assert f"dashboard: http://127.0.0.1:{settings.dashboard_port}/overview" in output


async def until_class_typing(settings, password: str, run: ServiceProcess, timeout: float = 120) -> list[dict]:
    """The demo class's overview, asked of the query API as the dev teacher, once every student typed."""
    auth = {"Authorization": aiohttp.encode_basic_auth("teacher", password)}
    body = {"export": "writing.course_overview", "params": {"course_id": "demo-class"}}
    rows: list[dict] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout)):
            assert run.process.poll() is None, run.log_tail()
            try:
                async with http.post(f"http://127.0.0.1:{settings.worker_port}/api/query", json=body, headers=auth) as r:
                    if r.status == 200:
                        rows = (await r.json())["result"]
                        if rows and all(row["events"] > 0 for row in rows):
                            return rows
            except aiohttp.ClientConnectionError:
                pass  # the worker is still starting
            await asyncio.sleep(1)
    raise AssertionError(f"the simulated class did not show up: {rows}\n{run.log_tail()}")


async def test_sigterm_stops_run_and_everything_it_started(settings, tmp_path):
    """As a service manager or `kill` would stop it; started as a background shell starts it,
    with SIGINT ignored, so that only SIGTERM can stop it."""
    settings = settings.model_copy(update={"gateway_port": free_port(), "dashboard_port": free_port()})
    log = tmp_path / "run.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lo_stream", "run", "--students", "1"], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **settings.as_env()}, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    run = ServiceProcess(settings, log)
    run.process = process
    try:
        await run.wait_until_serving(f"http://127.0.0.1:{settings.gateway_port}/healthz")
        await run.wait_until_serving(f"http://127.0.0.1:{settings.worker_port}/healthz")
        children = psutil.Process(process.pid).children()
        assert {" ".join(child.cmdline()[3:4]) for child in children} == {"worker", "gateway", "dashboard", "simulate"}
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, run.log_tail()
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    assert "SIGTERM: stopping worker, gateway, dashboard, simulator" in log.read_text()
    assert "SIGTERM received: committing, then leaving the group" in log.read_text()  # the worker stopped cleanly
