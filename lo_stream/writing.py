"""The built-in ``writing`` module: what Learning Observer's writing analytics compute.

Every reducer here is a pure function of (event, state); see tests/test_writing.py.
"""

from __future__ import annotations

import bisect
import statistics

from lo_stream.query import call, join, keys, parameter, query, select, variable
from lo_stream.reducers import event_reducer, student_event_reducer

__all__ = [
    "EDIT_EVENTS",
    "QUERIES",
    "TIME_ON_TASK_BIN_MS",
    "TIME_ON_TASK_GAP_CAP_MS",
    "TYPING_WINDOW",
    "documents",
    "event_count",
    "text",
    "time_on_task",
    "typing_speed",
]

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
    timestamp = _timestamp(event)
    if timestamp is None:
        return state
    timestamps = list(state["timestamps"])
    bisect.insort(timestamps, timestamp)
    timestamps = timestamps[-TYPING_WINDOW:]
    intervals = [later - earlier for earlier, later in zip(timestamps, timestamps[1:])]
    return {
        "timestamps": timestamps,
        "median_interval_ms": statistics.median(intervals) if intervals else None,
    }


TIME_ON_TASK_GAP_CAP_MS = 60_000
"""A pause longer than this (ms) counts as this much time on task: the student stepped away."""
TIME_ON_TASK_BIN_MS = 600_000
"""Time on task is also kept per window of this length (ms), keyed by the window's start."""


def _timestamp(event) -> float | None:
    timestamp = event["client"].get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        return None
    return timestamp


@event_reducer(scope=("student", "doc_id"), null_state={"total_ms": 0, "last_timestamp": None, "bins": {}})
def time_on_task(event, state):
    """Time a student spent on a document: the gaps between their events, each capped at 60 s,
    in total and per 10-minute window (a gap counts in the window of the event that ends it).

    An event older than the latest one seen adds nothing and does not move the clock back.
    Example: events at 0 s, 10 s and 200 s give 10 s + 60 s = 70 s.
    """
    timestamp = _timestamp(event)
    last = state["last_timestamp"]
    if timestamp is None or (last is not None and timestamp <= last):
        return state
    if last is None:
        return {**state, "last_timestamp": timestamp}
    gap = min(timestamp - last, TIME_ON_TASK_GAP_CAP_MS)
    window = str(int(timestamp // TIME_ON_TASK_BIN_MS * TIME_ON_TASK_BIN_MS))
    bins = {**state["bins"], window: state["bins"].get(window, 0) + gap}
    return {"total_ms": state["total_ms"] + gap, "last_timestamp": timestamp, "bins": bins}


def _apply_command(text: str, cursor: int, command) -> tuple[str, int]:
    """Apply one Google Docs command; unknown or malformed commands change nothing.

    Indices are 1-based and inclusive; out-of-range ones are clamped to the text (an insert past
    the end appends, a delete past the end stops at the end).
    """
    if not isinstance(command, dict):
        return text, cursor
    kind = command.get("ty")
    if kind == "is" and isinstance(command.get("s"), str) and isinstance(command.get("ibi"), int):
        at = min(max(command["ibi"], 1), len(text) + 1) - 1
        return text[:at] + command["s"] + text[at:], at + len(command["s"]) + 1
    if kind == "ds" and isinstance(command.get("si"), int) and isinstance(command.get("ei"), int):
        start, end = max(command["si"], 1), min(command["ei"], len(text))
        if start > end:
            return text, cursor
        return text[: start - 1] + text[end:], start
    if kind == "mlti" and isinstance(command.get("mts"), list):
        for inner in command["mts"]:
            text, cursor = _apply_command(text, cursor, inner)
        return text, cursor
    if kind == "rplc":
        snapshot = command.get("snapshot")
        if isinstance(snapshot, str):
            return snapshot, len(snapshot) + 1
        if isinstance(snapshot, list):
            return _apply_commands("", 1, snapshot)
    return text, cursor


def _apply_commands(text: str, cursor: int, commands) -> tuple[str, int]:
    for command in commands if isinstance(commands, list) else []:
        text, cursor = _apply_command(text, cursor, command)
    return text, cursor


def _text_state(text: str, cursor: int) -> dict:
    return {"text": text, "cursor": cursor, "characters": len(text), "words": len(text.split())}


@event_reducer(
    scope=("student", "doc_id"),
    null_state=_text_state("", 1),
    events=("google_docs_save", "document_history"),
)
def text(event, state):
    """The text of a Google Doc as the student wrote it, rebuilt from the edits in save events
    (``client.bundles[].commands[]``), or from scratch from a ``document_history`` event
    (``client.history.changelog``: entries whose first element is a command), with the cursor
    (1-based, after the last insert or at the start of the last delete) and character and word
    counts.

    Example: inserting "Hello" at 1 then " world" at 6 gives "Hello world", 2 words.
    """
    client = event["client"]
    if client.get("event") == "document_history":
        changelog = (client.get("history") or {}).get("changelog") if isinstance(client.get("history"), dict) else None
        commands = [entry[0] for entry in changelog or [] if isinstance(entry, list) and entry]
        return _text_state(*_apply_commands("", 1, commands))
    text_now, cursor = state["text"], state["cursor"]
    for bundle in client.get("bundles") or []:
        if isinstance(bundle, dict):
            text_now, cursor = _apply_commands(text_now, cursor, bundle.get("commands"))
    return _text_state(text_now, cursor)


@student_event_reducer(null_state={"documents": {}, "last_document": None, "last_access": None})
def documents(event, state):
    """The documents a student touched (events with a ``client.doc_id``), each with its latest
    access time (``client.timestamp``), and the most recently accessed one with its time.

    Example: doc "a" at t=5 then doc "b" at t=3 keeps "a" as the last document.
    """
    doc_id = event["client"].get("doc_id")
    timestamp = _timestamp(event)
    if not isinstance(doc_id, str) or timestamp is None:
        return state
    seen = state["documents"].get(doc_id, {}).get("last_access")
    docs = {**state["documents"], doc_id: {"last_access": timestamp if seen is None else max(seen, timestamp)}}
    last = max(docs, key=lambda d: docs[d]["last_access"])
    return {"documents": docs, "last_document": last, "last_access": docs[last]["last_access"]}


# -- queries ---------------------------------------------------------------------------------


def _per_student(reducer, fields):
    return select(keys(f"lo_stream.writing.{reducer}", student=(variable("roster"), "safe_user_id")), fields)


def _current_document(reducer, fields):
    """`reducer` (keyed by student and document) at each student's last document."""
    return select(
        keys(
            f"lo_stream.writing.{reducer}",
            student=(variable("documents"), "key.student"),
            doc_id=(variable("documents"), "last_document"),
        ),
        fields,
    )


def _joined_on_student(*names):
    node = variable(names[0])
    for name in names[1:]:
        node = join(node, variable(name), "key.student", "key.student")
    return node


QUERIES = query(
    {
        "roster": call("lo_stream.roster", parameter("course_id")),
        "counts": _per_student("event_count", {"count": "events"}),
        "speed": _per_student("typing_speed", {"median_interval_ms": "typing_median_ms"}),
        "documents": _per_student(
            "documents", {"last_document": "last_document", "last_access": "last_active", "documents": "documents"}
        ),
        "texts": _current_document("text", {"words": "words", "characters": "characters"}),
        "time": _current_document("time_on_task", {"total_ms": "time_on_task_ms"}),
        "students": join(
            _joined_on_student("counts", "speed", "documents", "texts", "time"),
            variable("roster"), "key.student", "safe_user_id",
        ),
        "student_text": select(
            keys("lo_stream.writing.text", student=([parameter("student")], None), doc_id=([parameter("doc_id")], None)),
        ),
        "student_documents": select(keys("lo_stream.writing.documents", student=([parameter("student")], None))),
        "student_typing": select(keys("lo_stream.writing.typing_speed", student=([parameter("student")], None))),
        "student_time": select(
            keys("lo_stream.writing.time_on_task", student=([parameter("student")], None),
                 doc_id=([parameter("doc_id")], None)),
        ),
    },
    exports={
        "course_overview": {
            "returns": "students",
            "description": "Per student of a course: events, typing speed (median interval, ms), last document "
            "and when, its words and characters, time on it (ms), with the roster.",
        },
        "student_text": {"returns": "student_text", "description": "A student's document: text, cursor, counts."},
        "student_documents": {"returns": "student_documents", "description": "The documents a student touched."},
        "student_time": {"returns": "student_time", "description": "Time on task on a document, per 10-minute window."},
        "student_typing": {"returns": "student_typing", "description": "A student's last edit times and typing speed."},
    },
)
