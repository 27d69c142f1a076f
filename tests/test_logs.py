"""Repeated log records are held back: the first passes, then one per interval with a count."""

from __future__ import annotations

import logging

from lo_stream.logs import RepeatFilter


def record(message: str, *args, line: int = 1) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, "conn.py", line, message, args, None)


def test_a_flood_of_one_kind_gives_one_line_per_interval_with_how_many_were_held_back():
    now = [0.0]
    repeats = RepeatFilter(interval=10, clock=lambda: now[0])
    passed = []
    for step in range(2500):  # 25 s of an error every 10 ms, with a changing argument
        now[0] = step / 100
        r = record("Unable connect to node with id %s: %s", 1, f"attempt {step}")
        if repeats.filter(r):
            passed.append(r.getMessage())
    assert passed == [
        "Unable connect to node with id 1: attempt 0",
        "Unable connect to node with id 1: attempt 1000 (repeated for 10 s, 999 like it held back)",
        "Unable connect to node with id 1: attempt 2000 (repeated for 20 s, 999 like it held back)",
    ]


def test_other_kinds_pass_and_a_kind_quiet_for_an_interval_starts_again():
    now = [0.0]
    repeats = RepeatFilter(interval=10, clock=lambda: now[0])
    assert repeats.filter(record("broker down"))
    assert repeats.filter(record("broker down", line=2))  # another place
    assert repeats.filter(record("commit failed (%s)", "x"))  # another template
    assert not repeats.filter(record("broker down"))
    now[0] = 25.0
    again = record("broker down")
    assert repeats.filter(again) and again.getMessage() == "broker down"  # a new run: no count


def test_lo_streams_own_lines_and_information_pass_always():
    repeats = RepeatFilter(interval=10, clock=lambda: 0.0)
    own = [logging.LogRecord("lo_stream.agents.engine", logging.ERROR, "e.py", 1, "commit failed", (), None)] * 3
    access = [logging.LogRecord("aiohttp.access", logging.INFO, "a.py", 1, "%s", ("GET /",), None)] * 3
    assert all(repeats.filter(r) for r in own + access)
