"""The built-in writing module: pure reducer functions with hand-computed expectations."""

from __future__ import annotations

import pytest

from lo_stream.modules import load_modules
from lo_stream.reducers import UNCHANGED, registry
from lo_stream.writing import (
    activity,
    document_access_timestamps,
    document_event_count,
    document_tagging,
    documents,
    event_count,
    student_profile,
    student_time_on_task,
    tab_list,
    tab_time_on_task,
    text,
    time_on_task,
    typing_speed,
)
from tests.support import envelope


def run(reducer, events, state=None):
    """Fold events through a reducer function from its null state."""
    state = registry.get(f"lo_stream.writing.{reducer.__name__}").initial_state() if state is None else state
    for event in events:
        result = reducer(event, state)
        state = state if result is UNCHANGED else result
    return state


def save(*commands, doc="d1"):
    return envelope("s1", event="google_docs_save", doc_id=doc, bundles=[{"commands": list(commands)}])


def insert(at, string):
    return {"ty": "is", "ibi": at, "s": string}


def delete(start, end):
    return {"ty": "ds", "si": start, "ei": end}


@pytest.fixture(autouse=True, scope="module")
def registered():
    load_modules()


# -- event count and typing speed ---------------------------------------------------------


def test_event_count_counts_every_event():
    assert run(event_count, [envelope("s1", event=e) for e in ("keystroke", "save", "anything")]) == {"count": 3}


def test_typing_speed_is_the_median_of_the_last_ten_intervals():
    times = [0, 100, 250, 300, 700, 800, 1000, 1100, 1150, 1400, 1500]  # 11 edits: the first drops out
    state = run(typing_speed, [envelope("s1", event="keystroke", timestamp=t) for t in times])
    assert state["timestamps"] == times[1:]
    # intervals 150, 50, 400, 100, 200, 100, 50, 250, 100 -> sorted middle value
    assert state["median_interval_ms"] == 100


def test_typing_speed_with_out_of_order_and_missing_timestamps():
    events = [envelope("s1", event="keystroke", timestamp=t) for t in (300, 100, 200)]
    events.append(envelope("s1", event="keystroke"))  # no timestamp: ignored
    events.append(envelope("s1", event="keystroke", timestamp="soon"))  # not a number: ignored
    assert run(typing_speed, events) == {"timestamps": [100, 200, 300], "median_interval_ms": 100}
    assert run(typing_speed, events[:1]) == {"timestamps": [300], "median_interval_ms": None}


def test_typing_speed_only_gets_edit_events():
    reducer = registry.get("lo_stream.writing.typing_speed")
    assert reducer.wants(envelope("s1", event="keystroke"))
    assert not reducer.wants(envelope("s1", event="visibility"))


# -- time on task --------------------------------------------------------------------------


def on_doc(*timestamps, doc="d1"):
    return [envelope("s1", event="keystroke", doc_id=doc, timestamp=t) for t in timestamps]


def test_time_on_task_sums_gaps_and_caps_long_pauses():
    state = run(time_on_task, on_doc(0, 10_000, 200_000))  # 10 s, then a 190 s pause capped at 60 s
    assert state["total_ms"] == 70_000
    assert state["bins"] == {"0": 70_000}


def test_time_on_task_splits_a_gap_between_the_windows_it_spans():
    state = run(time_on_task, on_doc(590_000, 610_000, 1_250_000, 1_260_000))
    # 10 s before 600 000 and 10 s after; a capped 60 s from 610 000; then 10 s in window 1 200 000
    assert state["bins"] == {"0": 10_000, "600000": 70_000, "1200000": 10_000}
    assert state["total_ms"] == 90_000


def test_time_on_task_ignores_late_and_timeless_events():
    events = on_doc(1_000, 5_000, 3_000) + [envelope("s1", event="keystroke", doc_id="d1")]
    assert run(time_on_task, events) == {"total_ms": 4_000, "last_timestamp": 5_000, "bins": {"0": 4_000}}


def test_time_on_task_is_kept_per_document_and_per_tab():
    reducer = registry.get("lo_stream.writing.time_on_task")
    assert reducer.key(on_doc(1, doc="essay")[0]) == '["s1","essay"]'
    assert reducer.key(envelope("s1", event="keystroke", timestamp=1)) is None  # no document
    per_tab = registry.get("lo_stream.writing.tab_time_on_task")
    in_tab = envelope("s1", event="keystroke", doc_id="essay", tab_id="t.2", timestamp=1)
    assert per_tab.key(in_tab) == '["s1","essay","t.2"]' and per_tab.key(on_doc(1)[0]) is None
    assert run(tab_time_on_task, [in_tab, {**in_tab, "client": {**in_tab["client"], "timestamp": 9_001}}])["total_ms"] == 9_000


def test_student_time_on_task_counts_every_document():
    events = on_doc(0, 10_000, doc="a") + on_doc(20_000, doc="b")
    assert run(student_time_on_task, events)["total_ms"] == 20_000
    assert run(time_on_task, events[:2])["total_ms"] == 10_000  # per document, "b" starts its own clock


def test_activity_counts_events_per_minute_for_the_latest_hour():
    events = [envelope("s1", event="keystroke", timestamp=t) for t in (0, 59_999, 60_000, 61 * 60_000)]
    assert run(activity, events)["minutes"] == {"0": 2, "60000": 1, "3660000": 1}
    hour_and_more = [envelope("s1", event="keystroke", timestamp=m * 60_000) for m in range(70)]
    minutes = run(activity, hour_and_more)["minutes"]
    assert len(minutes) == 60 and min(int(m) for m in minutes) == 10 * 60_000  # the oldest 10 minutes dropped
    assert run(activity, [envelope("s1", event="keystroke")]) == {"minutes": {}}  # no time: nothing


# -- text reconstruction (the rules themselves: tests/test_google_docs.py) ------------------


def test_inserts_and_deletes_rebuild_the_text():
    state = run(text, [save(insert(1, "Hello")), save(insert(6, " world")), save(delete(1, 6))])
    assert (state["text"], state["position"], state["characters"], state["words"]) == ("world", 1, 5, 1)


def test_a_document_with_text_from_before_logging_keeps_its_positions():
    """LO's example: from an empty document, "H" at 50, "i" at 51, then "X" at 10."""
    state = run(text, [save(insert(50, "H")), save(insert(51, "i")), save(insert(10, "X"))])
    assert (state["text"], state["position"], state["characters"]) == ("XHi", 11, 3)
    assert state["unseen_runs"] == [[0, 9], [10, 40]]  # 49 characters written before logging, unseen
    later = run(text, [save(delete(11, 50))], state)  # deletes unseen text only: "Hi" moves, "X" stays
    assert (later["text"], later["unseen_runs"]) == ("XHi", [[0, 9]])


def test_revert_and_replace_overwrite_text_in_place():
    written = run(text, [save(insert(1, "The cat sat"))])
    reverted = run(text, [save({"ty": "rvrt", "snapshot": [{"ty": "is", "ibi": 5, "s": "dog"}]})], written)
    assert reverted["text"] == "The dog sat" and reverted["position"] == written["position"]
    replaced = run(text, [save({"ty": "rplc", "snapshot": [{"ty": "is", "ibi": 1, "s": "A", "sl": 4}]})], reverted)
    assert replaced["text"] == "Adog sat"


def test_tabs_are_documents_of_their_own_and_count_in_the_words():
    in_tab = {"ty": "nm", "nmc": insert(1, "notes here"), "nmr": ["x", "t.notes"]}
    state = run(text, [save(insert(1, "Essay"), in_tab)])
    assert state["text"] == "Essay" and state["tabs"]["t.notes"]["text"] == "notes here"
    assert (state["words"], state["characters"]) == (3, 15)


def test_unknown_and_malformed_commands_are_ignored():
    state = run(
        text,
        [save(insert(1, "keep"), {"ty": "as", "st": "bold"}, {"ty": "is"}, {"ty": "ds", "si": "1"}, "junk")],
    )
    assert state["text"] == "keep"
    assert run(text, [envelope("s1", event="google_docs_save", doc_id="d1", bundles="oops")])["text"] == ""


def test_document_history_rebuilds_from_scratch():
    history = {"changelog": [[insert(1, "Once upon"), 1700000000000, "u"], [insert(10, " a time"), 1700000001000]]}
    state = run(text, [save(insert(1, "stale")), envelope("s1", event="document_history", doc_id="d1", history=history)])
    assert (state["text"], state["position"], state["words"]) == ("Once upon a time", 17, 4)


def test_empty_text_has_no_words():
    assert run(text, []) == {
        "text": "", "position": 0, "unseen_runs": [], "characters": 0, "words": 0, "tabs": {},
    }


# -- documents, tabs, tags, switches, profile ----------------------------------------------


def test_documents_keep_the_latest_access_and_the_last_document():
    events = [
        envelope("s1", event="keystroke", doc_id="a", timestamp=5),
        envelope("s1", event="keystroke", doc_id="b", timestamp=3),  # older: "a" stays the last
        envelope("s1", event="keystroke", doc_id="b", timestamp=2),  # out of order: keeps 3
        envelope("s1", event="visibility", timestamp=9),  # no document: ignored
    ]
    assert run(documents, events) == {
        "documents": {"a": {"last_access": 5}, "b": {"last_access": 3}},
        "last_document": "a",
        "last_access": 5,
    }
    events.append(envelope("s1", event="keystroke", doc_id="b", timestamp=8))
    assert run(documents, events)["last_document"] == "b"


def test_documents_keep_the_latest_title():
    events = [
        envelope("s1", event="keystroke", doc_id="a", timestamp=1, object={"id": "a", "title": "Untitled document"}),
        envelope("s1", event="keystroke", doc_id="a", timestamp=2, object={"id": "a", "title": "My essay"}),
        envelope("s1", event="keystroke", doc_id="a", timestamp=3),  # no title: the last one stays
    ]
    assert run(documents, events)["documents"] == {"a": {"last_access": 3, "title": "My essay"}}


def test_document_access_timestamps_record_each_switch():
    events = [
        envelope("s1", event="keystroke", doc_id="a", timestamp=10),
        envelope("s1", event="keystroke", doc_id="a", timestamp=20),  # same document: no switch
        envelope("s1", event="visibility", doc_id="b", timestamp=25),  # skipped, as LO does
        envelope("s1", event="keystroke", doc_id="b", timestamp=30, metadata={"ts": 31}),  # metadata.ts first
        envelope("s1", event="keystroke", doc_id="a", timestamp=40),
    ]
    assert run(document_access_timestamps, events) == {
        "timestamps": {"10": "a", "31": "b", "40": "a"}, "last_document": "a",
    }


def test_document_tagging_groups_documents_by_the_tags_in_their_titles():
    def opened(doc, title):
        return envelope("s1", event="document_history", doc_id=doc, object={"title": title}, history={"changelog": []})

    events = [opened("d1", "Draft #essay #unit3"), opened("d2", "Notes #unit3"), opened("d1", "Draft #essay")]
    assert run(document_tagging, events) == {"tags": {"essay": ["d1"], "unit3": ["d1", "d2"]}}
    typed = envelope("s1", event="keystroke", doc_id="d3", object={"title": "#elsewhere"})
    assert not registry.get("lo_stream.writing.document_tagging").wants(typed)  # titles of opened documents, as LO


def test_tab_list_learns_tabs_and_titles_from_commands_and_the_open_tab():
    def saved(*commands, timestamp, **fields):
        return envelope("s1", event="google_docs_save", doc_id="d1", timestamp=timestamp,
                        bundles=[{"commands": list(commands)}], **fields)

    events = [
        saved({"ty": "mkch", "d": [[0, "Main"]]}, timestamp=1),
        saved({"ty": "mlti", "mts": [{"ty": "ac", "d": ["t.abc", [0, "Sources"]]}]}, timestamp=2),
        saved(insert(1, "x"), timestamp=3, tab_id="t.abc"),  # typing in a known tab: its time moves
        saved({"ty": "ucp", "d": ["t.0", [0, [0, "Introduction"]]]}, timestamp=4),  # renamed: time stays
        saved(insert(1, "y"), timestamp=5, url="https://docs.google.com/document/d/d1/edit?tab=t.0"),
    ]
    assert run(tab_list, events) == {"tabs": {
        "t.0": {"tab_id": "t.0", "title": "Introduction", "last_accessed": 5},
        "t.abc": {"tab_id": "t.abc", "title": "Sources", "last_accessed": 3},
    }}


def test_student_profile_keeps_what_chrome_says():
    events = [
        envelope("s1", event="keystroke", chrome_identity={"email": "ana@school.org"}, auth={"safe_user_id": "gc-1"}),
        envelope("s1", event="keystroke"),  # says nothing: kept (LO would forget the e-mail)
    ]
    assert run(student_profile, events) == {"email": "ana@school.org", "google_id": "gc-1"}


def test_document_event_count_counts_per_document():
    events = on_doc(1, 2, doc="a") + on_doc(3, doc="b")
    assert run(document_event_count, events[:2]) == {"count": 2}
    assert registry.get("lo_stream.writing.document_event_count").key(events[2]) == '["s1","b"]'


async def test_reducers_run_through_the_registry_like_the_worker_runs_them():
    reducer = registry.get("lo_stream.writing.text")
    assert reducer.wants(save()) and not reducer.wants(envelope("s1", event="keystroke"))
    state = await reducer.apply(save(insert(1, "hi")), reducer.initial_state())
    assert state["text"] == "hi"
    assert reducer.null_state["text"] == ""  # the null state was not changed
