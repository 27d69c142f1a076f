"""Property-based fuzzing (Hypothesis) of what clients and producers send: the gateway's decode,
validate and lock path, and the worker's envelope decoding and folding. Whatever comes in is
either stored exactly as it came or refused with a reason: never another exception."""

from __future__ import annotations

import asyncio

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from lo_stream.connectors.gateway import MAX_DEPTH, RejectedEvent, decode_event, lock_fields, nesting
from lo_stream.envelopes import Identity, MalformedEventError, decode_envelopes, encode_message, make_envelope
from lo_stream.reducers import ReducerRegistry, student_event_reducer
from lo_stream.tables.entries import fold, runs_for

LIMIT = 4096
IDENTITY = Identity.of("ana lima", "token")

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=30)
field_names = st.sampled_from(["event", "source", "timestamp", "doc_id", "client", "n", "fields", "x"])
events = st.dictionaries(field_names, json_values, max_size=6)
fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def deep(levels: int, leaf: object = 1) -> object:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def encoded(value: object) -> bytes | None:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # NaN is null to orjson; integers past 64 bits are refused
        return None


def stored_and_read_back(event: dict) -> list[dict]:
    """What the worker reads of an event the gateway accepted: the envelope, through Kafka's bytes."""
    message = encode_message([make_envelope(event, IDENTITY, time=1.0)])
    return decode_envelopes(message, IDENTITY.safe_user_id)


@fuzz
@given(st.one_of(events, json_values, st.builds(lambda n, e: {**e, "deep": deep(n)}, st.integers(0, 300), events)))
def test_the_gateway_stores_an_event_exactly_or_refuses_it_with_a_reason(value):
    raw = encoded(value)
    if raw is None:
        return
    try:
        event = decode_event(raw, LIMIT)
    except RejectedEvent as exc:
        assert exc.reason in {"too_large", "invalid_json", "not_an_object", "missing_field", "wrong_type", "too_deep"}
        assert str(exc)
        return
    assert nesting(event) <= MAX_DEPTH
    [envelope] = stored_and_read_back(event)
    assert envelope["client"] == orjson.loads(raw)  # stored exactly as sent
    assert envelope["metadata"]["auth"]["safe_user_id"] == "ana+lima"


@fuzz
@given(st.binary(max_size=200))
def test_any_bytes_are_an_event_or_a_refusal(raw):
    try:
        event = decode_event(raw, LIMIT)
    except RejectedEvent:
        return
    assert stored_and_read_back(event)[0]["client"] == event


@fuzz
@given(st.lists(json_values, max_size=5), events)
def test_locked_fields_never_make_a_later_event_unusable(locks, event):
    locked: dict = {}
    for fields in locks:  # as the gateway gets them: a frame of JSON text
        raw = encoded({"event": "lock_fields", "fields": fields})
        try:
            locked = lock_fields(locked, decode_event(raw, LIMIT)["fields"], LIMIT) if raw else locked
        except RejectedEvent as exc:
            assert exc.reason in {"wrong_type", "too_large", "too_deep"}
    assert len(orjson.dumps(locked)) <= LIMIT
    raw = encoded({**event, "event": "keystroke"})
    if raw is None:
        return
    try:
        accepted = decode_event(raw, LIMIT)
    except RejectedEvent:
        return
    merged = {**accepted, **locked}  # what the gateway stores: locked fields win
    [envelope] = stored_and_read_back(merged)
    assert envelope["client"] == merged


own = ReducerRegistry()


@student_event_reducer(null_state={"events": 0, "kinds": []}, registry=own)
def kinds(event, state):
    return {"events": state["events"] + 1, "kinds": sorted({*state["kinds"], event["client"].get("event", "")})}


@fuzz
@given(st.one_of(st.binary(max_size=300), st.lists(events, max_size=4).map(lambda value: encoded(value) or b"{}"),
                 st.lists(st.builds(lambda e: make_envelope(e, IDENTITY, time=1.0), events), max_size=4)
                 .map(lambda envelopes: encoded(envelopes) or b"[]")),
       st.sampled_from(["ana+lima", "bo", ""]))
def test_the_worker_decodes_a_message_or_names_what_is_wrong_and_folds_what_it_decodes(message, key):
    try:
        envelopes = decode_envelopes(message, key)
    except MalformedEventError as exc:
        assert str(exc)
        return
    assert envelopes and all(e["metadata"]["auth"]["safe_user_id"] == key for e in envelopes)
    reducer = own.get(f"{__name__}.kinds")
    runs = runs_for(reducer, envelopes, 0, 7, student=key)
    folded = asyncio.run(fold(reducer, runs, lambda _key: None))
    assert folded.applied + len(folded.failures) == len(envelopes)
    if folded.applied:
        assert folded.changed[key]["state"]["events"] == folded.applied
        orjson.dumps(folded.changed[key])  # what the engine stores
