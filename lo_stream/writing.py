"""The built-in ``writing`` module: what Learning Observer's writing analytics compute, reducer
by reducer (each docstring names its LO counterpart; docs/writing.md compares them).

Every reducer here is a pure function of (event, state); see tests/test_writing.py.
"""

from __future__ import annotations

import bisect
import re
import statistics

from lo_stream.google_docs import Document, commands_of, tab_titles
from lo_stream.query import call, join, keys, parameter, query, select, variable
from lo_stream.reducers import UNCHANGED, event_reducer, student_event_reducer

__all__ = [
    "ACTIVITY_MINUTES",
    "EDIT_EVENTS",
    "QUERIES",
    "TIME_ON_TASK_BIN_MS",
    "TIME_ON_TASK_GAP_CAP_MS",
    "TYPING_WINDOW",
    "activity",
    "document_access_timestamps",
    "document_event_count",
    "document_tagging",
    "documents",
    "event_count",
    "student_profile",
    "student_time_on_task",
    "tab_list",
    "tab_time_on_task",
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
        return UNCHANGED
    timestamps = list(state["timestamps"])
    bisect.insort(timestamps, timestamp)
    timestamps = timestamps[-TYPING_WINDOW:]
    intervals = [later - earlier for earlier, later in zip(timestamps, timestamps[1:])]
    return {
        "timestamps": timestamps,
        "median_interval_ms": statistics.median(intervals) if intervals else None,
    }


TIME_ON_TASK_GAP_CAP_MS = 60_000
"""A pause longer than this (ms) counts as this much time on task: the student stepped away (LO's
``time_on_task_threshold``, 60 s)."""
TIME_ON_TASK_BIN_MS = 600_000
"""Time on task is also kept per window of this length (ms), keyed by the window's start (LO's
``binned_time_on_task_bin_size``, 600 s)."""


def _timestamp(event) -> float | None:
    timestamp = event["client"].get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        return None
    return timestamp


def _number(value) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else value


def _event_time_ms(event) -> float | None:
    """When an event happened, in ms: the client's ``timestamp``, else its ``metadata.ts``, else
    the gateway's receive time."""
    client = event["client"]
    metadata = client.get("metadata")
    found = _number(client.get("timestamp"))
    if found is None and isinstance(metadata, dict):
        found = _number(metadata.get("ts"))
    if found is None and isinstance(event.get("server"), dict):
        server_time = _number(event["server"].get("time"))
        found = None if server_time is None else server_time * 1000
    return found


def _spend(state: dict, event) -> dict:
    timestamp = _timestamp(event)
    last = state["last_timestamp"]
    if timestamp is None or (last is not None and timestamp <= last):
        return UNCHANGED
    if last is None:
        return {**state, "last_timestamp": timestamp}
    spent = min(timestamp - last, TIME_ON_TASK_GAP_CAP_MS)
    bins = dict(state["bins"])
    start, left = last, spent
    while left > 0:  # the time from `last` on, split at window boundaries
        window = int(start // TIME_ON_TASK_BIN_MS * TIME_ON_TASK_BIN_MS)
        share = min(left, window + TIME_ON_TASK_BIN_MS - start)
        bins[str(window)] = bins.get(str(window), 0) + share
        start, left = start + share, left - share
    return {"total_ms": state["total_ms"] + spent, "last_timestamp": timestamp, "bins": bins}


TIME_ON_TASK_NULL = {"total_ms": 0, "last_timestamp": None, "bins": {}}


@event_reducer(scope=("student", "doc_id"), null_state=TIME_ON_TASK_NULL, version=2)
def time_on_task(event, state):
    """Time a student spent on a document (LO: ``time_on_task`` and ``binned_time_on_task``):
    the gaps between their events, each capped at 60 s, in total and per 10-minute window (a gap
    that crosses into a new window is split between the two).

    Times are the client's (``client.timestamp``, ms). An event older than the latest one seen
    adds nothing and does not move the clock back.
    Example: events at 0 s, 10 s and 200 s give 10 s + 60 s = 70 s.
    """
    return _spend(state, event)


@student_event_reducer(null_state=TIME_ON_TASK_NULL)
def student_time_on_task(event, state):
    """`time_on_task` over all of a student's events, whatever the document (LO: the writing
    module's first ``time_on_task``, registered per student)."""
    return _spend(state, event)


ACTIVITY_MINUTES = 60
"""How many of a student's most recent minutes `activity` keeps."""


@student_event_reducer(null_state={"minutes": {}})
def activity(event, state):
    """How many events a student sent in each minute (client time; ``minutes`` maps a minute's
    start in ms, as a string, to its count), for the student's latest 60 minutes with events:
    the dashboards' sparklines and the class's activity over the session. (No LO counterpart.)
    """
    timestamp = _timestamp(event)
    if timestamp is None:
        return UNCHANGED
    minute = str(int(timestamp // 60_000 * 60_000))
    minutes = {**state["minutes"], minute: state["minutes"].get(minute, 0) + 1}
    if len(minutes) > ACTIVITY_MINUTES:
        minutes = dict(sorted(minutes.items(), key=lambda kv: int(kv[0]))[-ACTIVITY_MINUTES:])
    return {"minutes": minutes}


@event_reducer(scope=("student", "doc_id", "tab_id"), null_state=TIME_ON_TASK_NULL)
def tab_time_on_task(event, state):
    """`time_on_task` per tab of a document (LO: ``gdoc_tab_scope_time_on_task``), for events
    that name their tab (``client.tab_id``)."""
    return _spend(state, event)


@event_reducer(
    scope=("student", "doc_id"),
    null_state=Document().state(),
    events=("google_docs_save", "document_history"),
    version=2,
)
def text(event, state):
    """The text of a Google Doc as the student wrote it (LO: ``reconstruct``), with LO's rules
    (`lo_stream.google_docs`): rebuilt from the edits in save events (``client.bundles[].commands[]``),
    or from scratch from a ``document_history`` event (``client.history.changelog[][0]``).

    The state: ``text`` as a reader sees it, its ``words`` and ``characters`` (the tabs' included),
    LO's cursor ``position``, ``unseen_runs`` (where characters written before logging began sit)
    and ``tabs`` (each tab's own state).
    Example: inserting "Hello" at 1 then " world" at 6 gives "Hello world", 2 words.
    """
    client = event["client"]
    doc = Document() if client.get("event") == "document_history" else Document.from_state(state)
    doc.apply_all(commands_of(client))
    return doc.state()


def _title(client) -> str | None:
    thing = client.get("object")
    title = thing.get("title") if isinstance(thing, dict) else None
    return title if isinstance(title, str) else None


@student_event_reducer(null_state={"documents": {}, "last_document": None, "last_access": None}, version=2)
def documents(event, state):
    """The documents a student touched (LO: ``document_list`` and ``last_document``): each with its
    title (the latest ``client.object.title`` seen) and latest access time (ms), and the most
    recently accessed one with its time. Events name their document by ``client.doc_id`` (the
    gateway copies it from ``client.object`` the way LO does, `lo_stream.envelopes.with_doc_id`).

    Example: doc "a" at t=5 then doc "b" at t=3 keeps "a" as the last document.
    """
    client = event["client"]
    doc_id = client.get("doc_id")
    timestamp = _event_time_ms(event)
    if not isinstance(doc_id, str) or not doc_id or timestamp is None:
        return UNCHANGED
    entry = dict(state["documents"].get(doc_id, {}))
    seen = entry.get("last_access")
    entry["last_access"] = timestamp if seen is None else max(seen, timestamp)
    title = _title(client)
    if title is not None:
        entry["title"] = title
    docs = {**state["documents"], doc_id: entry}
    last = max(docs, key=lambda d: docs[d]["last_access"])
    return {"documents": docs, "last_document": last, "last_access": docs[last]["last_access"]}


@student_event_reducer(null_state={"timestamps": {}, "last_document": ""})
def document_access_timestamps(event, state):
    """When a student moved to another document (LO: ``document_access_timestamps``): ``timestamps``
    maps each switch's time (ms, as a string) to the document, so "which document was open at
    10:45?" is the latest switch before then. ``visibility`` events are skipped (switching browser
    tabs sends them from both documents).
    """
    client = event["client"]
    doc_id = client.get("doc_id")
    if client.get("event") == "visibility" or not isinstance(doc_id, str) or not doc_id:
        return UNCHANGED
    if doc_id == state["last_document"]:
        return UNCHANGED
    metadata = client.get("metadata")
    when = _number(metadata.get("ts")) if isinstance(metadata, dict) else None
    when = _event_time_ms(event) if when is None else when
    if when is None:
        return UNCHANGED
    key = str(int(when)) if float(when).is_integer() else str(when)
    return {"timestamps": {**state["timestamps"], key: doc_id}, "last_document": doc_id}


TAG = re.compile(r"#(\w+)")


@student_event_reducer(null_state={"tags": {}}, events="document_history")
def document_tagging(event, state):
    """Documents grouped by the #tags in their titles (LO: ``document_tagging``): ``tags`` maps each
    tag to the documents whose title carries it, from ``document_history`` events (sent when a
    student opens a document), as LO does. Example: "Draft #essay #unit3" tags "essay" and "unit3".
    """
    client = event["client"]
    doc_id, title = client.get("doc_id"), _title(client)
    if not isinstance(doc_id, str) or not doc_id or title is None:
        return UNCHANGED
    tags = dict(state["tags"])
    for tag in TAG.findall(title):
        if doc_id not in tags.get(tag, []):
            tags[tag] = [*tags.get(tag, []), doc_id]
    return {"tags": tags}


def _tab_of(client) -> str | None:
    """The tab an event was sent from: ``client.tab_id``, else ``tab=`` in the document's URL."""
    tab_id = client.get("tab_id")
    if isinstance(tab_id, str) and tab_id:
        return tab_id
    thing = client.get("object")
    url = client.get("url") or (thing.get("url") if isinstance(thing, dict) else None)
    match = re.search(r"tab=([^&#]+)", url) if isinstance(url, str) else None
    return match.group(1) if match else None


@event_reducer(scope=("student", "doc_id"), null_state={"tabs": {}})
def tab_list(event, state):
    """The tabs of a document (LO: ``tab_list``): each with its title and when it was last open.
    Tabs and titles come from the commands that add (``ac``), rename (``ucp``) or name the first
    (``mkch``) tab; an event sent from a known tab (`client.tab_id`, or ``tab=`` in its URL)
    updates that tab's ``last_accessed`` (ms).
    """
    client = event["client"]
    when = _event_time_ms(event)
    tabs = state["tabs"]
    changed = {}
    active = _tab_of(client)
    if active is not None and active in tabs:
        changed[active] = {**tabs[active], "last_accessed": when}
    for tab_id, title in tab_titles(client):
        known = changed.get(tab_id) or tabs.get(tab_id)
        if known is None:
            changed[tab_id] = {"tab_id": tab_id, "title": title, "last_accessed": when}
        elif title is not None:
            changed[tab_id] = {**known, "title": title}
    return {"tabs": {**tabs, **changed}} if changed else UNCHANGED


@student_event_reducer(null_state={"email": None, "google_id": None})
def student_profile(event, state):
    """Who a student is by their Chrome sign-in (LO: ``student_profile``): ``email`` from
    ``client.chrome_identity.email`` and ``google_id`` from ``client.auth.safe_user_id``, each kept
    until an event says otherwise."""
    client = event["client"]
    chrome, auth = client.get("chrome_identity"), client.get("auth")
    email = chrome.get("email") if isinstance(chrome, dict) else None
    google_id = auth.get("safe_user_id") if isinstance(auth, dict) else None
    updated = {
        "email": email if isinstance(email, str) else state["email"],
        "google_id": google_id if isinstance(google_id, str) else state["google_id"],
    }
    return UNCHANGED if updated == state else updated


@event_reducer(scope=("student", "doc_id"), null_state={"count": 0})
def document_event_count(event, state):
    """Every event a student sent about a document (LO: the writing module's ``event_count``)."""
    return {"count": state["count"] + 1}


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
        "all_time": _per_student("student_time_on_task", {"total_ms": "total_time_on_task_ms"}),
        "activity": _per_student("activity", {"minutes": "activity"}),
        "students": join(
            _joined_on_student("counts", "speed", "documents", "texts", "time", "all_time", "activity"),
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
        "student_tabs": select(
            keys("lo_stream.writing.tab_list", student=([parameter("student")], None),
                 doc_id=([parameter("doc_id")], None)),
        ),
        "student_tags": select(keys("lo_stream.writing.document_tagging", student=([parameter("student")], None))),
        "student_switches": select(
            keys("lo_stream.writing.document_access_timestamps", student=([parameter("student")], None))
        ),
        "student_profile": select(keys("lo_stream.writing.student_profile", student=([parameter("student")], None))),
    },
    exports={
        "course_overview": {
            "returns": "students",
            "description": "Per student of a course: events, typing speed (median interval, ms), last document "
            "and when, their documents with titles, the last one's words and characters, time on it and in all "
            "(ms), events per minute of their latest hour, with the roster.",
        },
        "student_text": {"returns": "student_text", "description": "A student's document: text, cursor, counts."},
        "student_documents": {
            "returns": "student_documents", "description": "The documents a student touched, with titles and last access.",
        },
        "student_time": {"returns": "student_time", "description": "Time on task on a document, per 10-minute window."},
        "student_typing": {"returns": "student_typing", "description": "A student's last edit times and typing speed."},
        "student_tabs": {"returns": "student_tabs", "description": "The tabs of a student's document, with titles."},
        "student_tags": {"returns": "student_tags", "description": "A student's documents by the #tags in their titles."},
        "student_switches": {
            "returns": "student_switches", "description": "When a student moved to another document, and to which.",
        },
        "student_profile": {"returns": "student_profile", "description": "A student's Chrome sign-in e-mail and id."},
    },
)
