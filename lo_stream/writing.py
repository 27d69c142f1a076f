"""The built-in ``writing`` module: what Learning Observer's writing analytics compute.

Every reducer here is a pure function of (event, state); see tests/test_writing.py.
"""

from __future__ import annotations

import bisect
import statistics

from lo_stream.reducers import student_event_reducer

__all__ = ["EDIT_EVENTS", "TYPING_WINDOW", "event_count", "typing_speed"]

EDIT_EVENTS = ("keystroke", "google_docs_save")
TYPING_WINDOW = 10
"""Typing speed is the median interval between this many most recent edit timestamps."""


@student_event_reducer(null_state={"count": 0})
def event_count(event, state):
    """Every event a student sent."""
    return {"count": state["count"] + 1}


@student_event_reducer(null_state={"timestamps": [], "median_interval_ms": None}, events=EDIT_EVENTS)
def typing_speed(event, state):
    """A poor man's typing speed: the median of the intervals between the last 10 edits, in ms.

    Timestamps (``client.timestamp``, ms) may arrive out of order: the 10 latest are kept sorted.
    """
    timestamp = event["client"].get("timestamp")
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return state
    timestamps = list(state["timestamps"])
    bisect.insort(timestamps, timestamp)
    timestamps = timestamps[-TYPING_WINDOW:]
    intervals = [later - earlier for earlier, later in zip(timestamps, timestamps[1:])]
    return {
        "timestamps": timestamps,
        "median_interval_ms": statistics.median(intervals) if intervals else None,
    }
