"""`fold`, the one piece of logic the worker and offline mode share: a batch folded at once, as
runs of whole messages, gives the very entries that folding its events one at a time gives,
whatever the keys, failures and re-deliveries in it."""

from __future__ import annotations

import random

import pytest

from lo_stream.reducers import UNCHANGED, ReducerRegistry, event_reducer, student_event_reducer
from lo_stream.tables.entries import Batch, Run, fold, items_for, runs_for, runs_of
from tests.support import envelope

own = ReducerRegistry()


@student_event_reducer(null_state={"n": 0, "seen": []}, registry=own)
async def picky(event, state):
    if event["client"].get("bad"):
        state["seen"].append("half-done")  # changed in place, then raised: the change stays, as in Python
        raise ValueError("cannot take this one")
    return {"n": state["n"] + 1, "seen": [*state["seen"], event["client"]["timestamp"]]}


@event_reducer(scope=("student", "doc_id"), null_state=0, events="keystroke", registry=own)
def per_document(event, state):
    return state + 1, {"external": "half"}  # Learning Observer's (internal, external) pair


@student_event_reducer(null_state={"saves": 0}, registry=own)
def saves_only(event, state):
    if event["client"]["event"] != "save":
        return UNCHANGED if event["client"]["timestamp"] % 2 else (False, False)  # ours, and LO's "no write"
    return {"saves": state["saves"] + 1}


@student_event_reducer(null_state=0, events="keystroke", registry=own)
def keystrokes(event, state):
    return state + 1


PICKY = own.get(f"{__name__}.picky")
PER_DOCUMENT = own.get(f"{__name__}.per_document")
SAVES_ONLY = own.get(f"{__name__}.saves_only")


async def fold_one_by_one(reducer, runs, entries):
    failures = []
    for item in [item for run in runs for item in run.items()]:
        folded = await fold(reducer, runs_of([item]), entries.get)
        entries.update(folded.changed)
        failures += [failure.item for failure in folded.failures]
    return entries, failures


def random_batch(rng: random.Random, messages: int) -> dict[str, list[Run]]:
    """Messages of 1-4 events of three students on two partitions, some bad, some delivered twice,
    laid out for each reducer as the worker lays out a fetch (`Batch`)."""
    by_partition: dict[int, list] = {0: [], 1: []}
    for offset in range(messages):
        student = rng.choice(["ana", "bo", "cy"])
        events = [envelope(student, event=rng.choice(["keystroke", "save"]), timestamp=offset * 10 + i,
                           doc_id=rng.choice(["d1", "d2"]), bad=rng.random() < 0.1) for i in range(rng.randint(1, 4))]
        by_partition[offset % 2].append((offset, rng.choice([student, None]), events))  # None: students not known
    runs = {}
    for reducer in (PICKY, PER_DOCUMENT, SAVES_ONLY):
        mine = [run for partition, batch in by_partition.items() for run in Batch(partition, batch).runs(reducer)]
        duplicates = rng.sample(mine, len(mine) // 5)  # re-forwarded after a failed commit, in the same batch
        runs[reducer.id] = mine + duplicates
    return runs


@pytest.mark.parametrize("seed", range(5))
async def test_a_batch_folded_at_once_equals_its_events_folded_one_by_one(seed):
    rng = random.Random(seed)
    first, second = random_batch(rng, 40), random_batch(rng, 40)
    assert any(len(run.envelopes) > 1 for runs in first.values() for run in runs)  # whole messages, not events
    for reducer in (PICKY, PER_DOCUMENT, SAVES_ONLY):
        expected, expected_failures = await fold_one_by_one(reducer, first[reducer.id], {})
        expected, more_failures = await fold_one_by_one(reducer, second[reducer.id], expected)
        entries: dict = {}
        failures = []
        for batch in (first, second):
            folded = await fold(reducer, batch[reducer.id], entries.get)
            entries.update(folded.changed)
            failures += [failure.item for failure in folded.failures]
        assert entries == expected
        assert failures == expected_failures + more_failures


def test_a_reducer_takes_the_runs_of_its_scope_and_events():
    events = [envelope("ana", event="keystroke", doc_id="d"), envelope("ana", event="save", doc_id="d"),
              envelope("ana", event="keystroke", doc_id="e"), envelope("ana", event="keystroke", doc_id="e")]
    whole, = runs_for(PICKY, events, 0, 3, student="ana")
    assert whole == Run("ana", events, "0", 3, None)
    assert runs_for(PER_DOCUMENT, events, 0, 3, student="ana") == [
        Run('["ana","d"]', events[:1], "0", 3, (0,)), Run('["ana","e"]', events[2:], "0", 3, (2, 3))]
    keystrokes = own.get(f"{__name__}.keystrokes")
    assert runs_for(keystrokes, events, 0, 3, student="ana") == [Run("ana", [events[0], *events[2:]], "0", 3, (0, 2, 3))]
    assert [item.index for item in items_for(PER_DOCUMENT, events, 0, 3)] == [0, 2, 3]


async def test_an_async_reducer_raising_keeps_the_state_before_the_event_and_goes_on():
    events = [envelope("ana", event="x", timestamp=1), envelope("ana", event="x", timestamp=2, bad=True),
              envelope("ana", event="x", timestamp=3), envelope("bo", event="x", timestamp=4, bad=True)]
    items = items_for(PICKY, events[:3], 0, 7) + items_for(PICKY, events[3:], 0, 8)
    folded = await fold(PICKY, runs_of(items), lambda key: None)
    assert folded.changed == {"ana": {"state": {"n": 2, "seen": [1, "half-done", 3]}, "offset": 7, "partition": 0,
                                      "applied": {"0": [7, 2]}}}
    assert [(f.item.key, f.item.index, f.error) for f in folded.failures] == [
        ("ana", 1, "ValueError: cannot take this one"), ("bo", 0, "ValueError: cannot take this one")]
    assert (folded.applied, folded.redelivered) == (2, 0)


async def test_events_at_or_before_a_keys_applied_mark_are_skipped():
    entry = {"state": 5, "offset": 3, "partition": 1, "applied": {"1": [3, 1], "0": [9, 0]}}
    events = [envelope("ana", event="keystroke", doc_id="d", timestamp=i) for i in range(3)]
    runs = runs_for(PER_DOCUMENT, events, 1, 3) + runs_for(PER_DOCUMENT, events[:1], 1, 4)
    folded = await fold(PER_DOCUMENT, runs, {'["ana","d"]': entry}.get)
    assert folded.changed == {'["ana","d"]': {"state": 7, "offset": 4, "partition": 1,
                                              "applied": {"1": [4, 0], "0": [9, 0]}}}
    assert (folded.applied, folded.redelivered) == (2, 2)


async def test_events_that_change_nothing_write_nothing_and_change_nothing_when_delivered_again():
    typed = [envelope("ana", event="keystroke", timestamp=t) for t in (1, 2)]  # UNCHANGED, then LO's (False, False)
    folded = await fold(SAVES_ONLY, runs_for(SAVES_ONLY, typed, 0, 5), lambda key: None)
    assert folded.changed == {} and folded.applied == 2  # no entry: no table write, no changelog record
    batch = runs_for(SAVES_ONLY, [envelope("ana", event="save", timestamp=3), *typed], 0, 6)
    folded = await fold(SAVES_ONLY, batch, lambda key: None)
    assert folded.changed == {"ana": {"state": {"saves": 1}, "offset": 6, "partition": 0, "applied": {"0": [6, 0]}}}
    # A restart before the commit delivers the unchanged events again: they meet the same state.
    again = await fold(SAVES_ONLY, runs_for(SAVES_ONLY, typed, 0, 5) + batch, folded.changed.get)
    assert again.changed == {} and again.redelivered == 3
    assert await SAVES_ONLY.apply(typed[0], {"saves": 4}) == {"saves": 4}


def test_a_messages_student_is_taken_as_the_key_only_by_reducers_kept_per_student():
    events = [envelope("ana", event="keystroke", doc_id="d"), envelope("ana", event="save", doc_id="d")]
    assert [item.key for item in items_for(PICKY, events, 0, 1, student="ana")] == ["ana", "ana"]
    assert [item.key for item in items_for(PER_DOCUMENT, events, 0, 1, student="ana")] == ['["ana","d"]']
