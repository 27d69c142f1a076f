"""The researcher's API: declaring reducers, their ids, scopes, filters and versions."""

from __future__ import annotations

import pytest

from lo_stream.reducers import (
    DuplicateReducerError,
    ReducerDefinitionError,
    ReducerRegistry,
    event_reducer,
    scope_key,
    student_event_reducer,
)

reducers = ReducerRegistry()


@student_event_reducer(null_state={"count": 0}, registry=reducers)
async def count_events(event, state):
    state["count"] += 1  # mutating the given state must not leak into null_state
    return state


@event_reducer(
    scope=("student", "doc_id"), null_state={"saves": 0}, events="google_docs_save", version=3, registry=reducers
)
def saves_per_document(event, state):
    return {"saves": state["saves"] + 1}


@student_event_reducer(null_state=[], sources=["org.mitros.writing_analytics"], registry=reducers)
def learning_observer_style(event, state):
    new_state = state + [event["client"]["event"]]
    return new_state, {"visible": len(new_state)}


def envelope(student="s1", **client):
    return {"client": client, "server": {"time": 1.0}, "metadata": {"auth": {"safe_user_id": student}}}


def test_ids_are_module_and_function_and_every_reducer_is_registered_once():
    assert [r.id for r in reducers] == [
        "tests.test_reducers.count_events",
        "tests.test_reducers.saves_per_document",
        "tests.test_reducers.learning_observer_style",
        "tests.test_reducers.per_course",
    ]
    assert reducers.get("tests.test_reducers.saves_per_document").version == 3
    assert reducers.get("tests.test_reducers.saves_per_document").table_name == "tests.test_reducers.saves_per_document-v3"
    assert len(reducers.from_module("tests.test_reducers")) == 4
    assert reducers.from_module("tests.test_reduce") == []


def test_the_decorated_function_is_returned_unchanged_for_unit_tests():
    assert saves_per_document(envelope(), {"saves": 2}) == {"saves": 3}


async def test_state_starts_as_a_fresh_copy_of_null_state():
    reducer = reducers.get("tests.test_reducers.count_events")
    first = await reducer.apply(envelope(), reducer.initial_state())
    second = await reducer.apply(envelope(), reducer.initial_state())
    assert first == second == {"count": 1}
    assert reducer.null_state == {"count": 0}


async def test_sync_functions_and_learning_observer_pairs_keep_the_internal_state():
    reducer = reducers.get("tests.test_reducers.learning_observer_style")
    assert await reducer.apply(envelope(event="keystroke"), ["save"]) == ["save", "keystroke"]


def test_scope_gives_the_key_and_skips_events_without_it():
    by_document = reducers.get("tests.test_reducers.saves_per_document")
    assert by_document.key(envelope("s1", doc_id="d9")) == '["s1","d9"]'
    assert by_document.key(envelope("s1")) is None  # no doc_id: not for this reducer
    assert reducers.get("tests.test_reducers.count_events").key(envelope("s7")) == "s7"
    assert not by_document.needs_repartition


@event_reducer(scope=("context.course_id",), registry=reducers)
def per_course(event, state):
    return state


def test_dotted_scope_fields_reach_into_the_event():
    reducer = reducers.get("tests.test_reducers.per_course")
    assert reducer.key(envelope(context={"course_id": 42})) == "42"
    assert reducer.key(envelope(context="flat")) is None
    assert reducer.needs_repartition  # not keyed by student


def test_filters_pick_events_by_type_and_source():
    saves = reducers.get("tests.test_reducers.saves_per_document")
    assert saves.wants(envelope(event="google_docs_save"))
    assert not saves.wants(envelope(event="keystroke"))
    writing = reducers.get("tests.test_reducers.learning_observer_style")
    assert writing.wants(envelope(source="org.mitros.writing_analytics", event="anything"))
    assert not writing.wants(envelope(source="other"))
    assert reducers.get("tests.test_reducers.count_events").wants(envelope())


def test_scope_key_is_unambiguous():
    assert scope_key(["a/b"]) == "a/b"
    assert scope_key(["a", "b/c"]) != scope_key(["a/b", "c"])


def test_a_second_reducer_with_the_same_id_is_refused_with_both_places():
    local = ReducerRegistry()

    def first(event, state):
        return state

    def second(event, state):
        return state

    first.__qualname__ = second.__qualname__ = "same_name"
    event_reducer(registry=local)(first)
    with pytest.raises(DuplicateReducerError, match=r"two reducers are named 'tests.test_reducers.same_name' \(.*test_reducers.py:\d+ and .*test_reducers.py:\d+\)"):
        event_reducer(registry=local)(second)


def test_re_registering_the_same_function_is_harmless():
    local = ReducerRegistry()
    decorate = student_event_reducer(registry=local)
    decorate(count_events)
    decorate(count_events)
    assert len(local) == 1


@pytest.mark.parametrize(
    ("options", "function_source", "message"),
    [
        ({}, "def f(event):\n    return 1", "must take \\(event, state\\)"),
        ({"scope": ()}, "def f(event, state):\n    return 1", "scope must be a non-empty list"),
        ({"version": 0}, "def f(event, state):\n    return 1", "version must be a positive integer"),
        ({"null_state": {1, 2}}, "def f(event, state):\n    return 1", "null_state must be JSON-serialisable"),
        ({"events": [3]}, "def f(event, state):\n    return 1", "events must be strings"),
    ],
)
def test_bad_declarations_are_refused_with_the_reason(options, function_source, message):
    namespace: dict = {"__name__": "tests.bad_reducers"}
    exec(function_source, namespace)
    with pytest.raises(ReducerDefinitionError, match=message):
        event_reducer(registry=ReducerRegistry(), **options)(namespace["f"])


def test_reducers_inside_functions_are_refused():
    def make():
        def inner(event, state):
            return state

        return inner

    with pytest.raises(ReducerDefinitionError, match="module-level function"):
        student_event_reducer(registry=ReducerRegistry())(make())
