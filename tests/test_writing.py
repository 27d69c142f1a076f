"""The built-in writing module: pure reducer functions with hand-computed expectations."""

from __future__ import annotations

import pytest

from lo_stream.modules import load_modules
from lo_stream.reducers import registry
from lo_stream.writing import documents, event_count, text, time_on_task, typing_speed
from tests.support import envelope


def run(reducer, events, state=None):
    """Fold events through a reducer function from its null state."""
    state = registry.get(f"lo_stream.writing.{reducer.__name__}").initial_state() if state is None else state
    for event in events:
        state = reducer(event, state)
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


def test_time_on_task_bins_gaps_into_the_window_of_the_later_event():
    state = run(time_on_task, on_doc(590_000, 610_000, 1_250_000, 1_260_000))
    # 20 s ending in window 600 000; a capped 60 s ending in window 1 200 000; then 10 s more there
    assert state["bins"] == {"600000": 20_000, "1200000": 70_000}
    assert state["total_ms"] == 90_000


def test_time_on_task_ignores_late_and_timeless_events():
    events = on_doc(1_000, 5_000, 3_000) + [envelope("s1", event="keystroke", doc_id="d1")]
    assert run(time_on_task, events) == {"total_ms": 4_000, "last_timestamp": 5_000, "bins": {"0": 4_000}}


def test_time_on_task_is_kept_per_document():
    reducer = registry.get("lo_stream.writing.time_on_task")
    assert reducer.key(on_doc(1, doc="essay")[0]) == '["s1","essay"]'
    assert reducer.key(envelope("s1", event="keystroke", timestamp=1)) is None  # no document


# -- text reconstruction -------------------------------------------------------------------


def test_inserts_and_deletes_rebuild_the_text():
    state = run(text, [save(insert(1, "Hello")), save(insert(6, " world")), save(delete(1, 6))])
    assert state == {"text": "world", "cursor": 1, "characters": 5, "words": 1}


def test_insert_at_the_start_and_past_the_end():
    state = run(text, [save(insert(1, "b"), insert(1, "a"), insert(99, "c"))])
    assert state["text"] == "abc"
    assert state["cursor"] == 4  # after the appended "c"


def test_deletes_at_both_ends_and_out_of_range():
    state = run(text, [save(insert(1, "abcdef"), delete(1, 1), delete(5, 5))])
    assert state["text"] == "bcde"
    assert run(text, [save(insert(1, "abc"), delete(2, 50))])["text"] == "a"  # clamped to the end
    assert run(text, [save(insert(1, "abc"), delete(3, 2))])["text"] == "abc"  # empty range: nothing
    assert run(text, [save(delete(1, 3))])["text"] == ""  # deleting from empty text


def test_multi_commands_apply_in_order_even_nested():
    nested = {"ty": "mlti", "mts": [insert(1, "one two"), {"ty": "mlti", "mts": [delete(4, 7), insert(4, "!")]}]}
    assert run(text, [save(nested)]) == {"text": "one!", "cursor": 5, "characters": 4, "words": 1}


def test_replace_sets_the_snapshot():
    state = run(text, [save(insert(1, "draft")), save({"ty": "rplc", "snapshot": "final text"})])
    assert state == {"text": "final text", "cursor": 11, "characters": 10, "words": 2}


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
    assert state == {"text": "Once upon a time", "cursor": 17, "characters": 16, "words": 4}


def test_empty_text_has_no_words():
    assert run(text, []) == {"text": "", "cursor": 1, "characters": 0, "words": 0}


# -- documents -----------------------------------------------------------------------------


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


async def test_reducers_run_through_the_registry_like_the_worker_runs_them():
    reducer = registry.get("lo_stream.writing.text")
    assert reducer.wants(save()) and not reducer.wants(envelope("s1", event="keystroke"))
    state = await reducer.apply(save(insert(1, "hi")), reducer.initial_state())
    assert state["text"] == "hi"
    assert reducer.null_state["text"] == ""  # the null state was not changed
