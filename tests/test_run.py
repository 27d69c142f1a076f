"""`lo-stream run` (what `make run` calls) brings up a worker and a gateway that work together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from tests.support import ServiceProcess, free_port, wait_for_table

pytestmark = pytest.mark.kafka


async def test_run_serves_events_end_to_end_and_stops_cleanly(settings, tmp_path):
    settings = settings.model_copy(update={"gateway_port": free_port()})
    log = tmp_path / "run.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lo_stream", "run"], stdout=out, stderr=subprocess.STDOUT,
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
        await wait_for_table(
            settings, "lo_stream.writing.event_count-v1", {"ana": 3}, run, project=lambda v: v["state"]["count"]
        )
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=90)
    assert code == 0, run.log_tail()
    output = log.read_text()
    assert "DEVELOPMENT MODE: the gateway accepts test_framework_fake_identity" in output
    assert "stopping Kafka" not in output  # a configured broker is not ours to stop
