"""A live query's updates (`lo_stream.query.subscriptions.Subscription`), without a worker."""

from __future__ import annotations

import asyncio

from lo_stream.query import subscriptions
from lo_stream.query.executor import Unavailable
from lo_stream.query.language import QueryError
from lo_stream.query.subscriptions import Subscription


def _subscription(outcomes: list, sent: list[dict], asked: list) -> Subscription:
    """A subscription whose runs give `outcomes` in turn: an exception is raised, a function is
    called with the subscription first."""
    async def run(students):
        asked.append(students)
        outcome = outcomes.pop(0)
        if callable(outcome):
            outcome = outcome(subscription)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def send(message: dict) -> None:
        sent.append(message)

    subscription = Subscription("m", {"r"}, run, send)
    return subscription


async def _settled(subscription: Subscription) -> None:
    for _ in range(200):
        if subscription._task is None or subscription._task.done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the subscription is still updating")


async def test_changes_met_by_a_restoring_worker_are_sent_once_it_answers(monkeypatch):
    monkeypatch.setattr(subscriptions, "UPDATE_INTERVAL_S", 0.01)
    sent, asked = [], []
    rows = [{"key": {"student": "s1"}, "events": 3}, {"key": {"student": "s2"}, "events": 1}]

    def restoring(subscription: Subscription) -> Exception:
        subscription.mark({"s2"})  # a change arrives while the worker waits for its tables
        return Unavailable("worker w is still restoring its tables")

    subscription = _subscription([restoring, rows], sent, asked)
    subscription.mark({"s1"})
    await _settled(subscription)
    assert asked == [{"s1"}, {"s1", "s2"}]
    assert sent == [{"subscription": "m", "type": "update", "rows": rows}]


async def test_a_query_error_stops_that_update_and_the_next_change_runs_again(monkeypatch):
    monkeypatch.setattr(subscriptions, "UPDATE_INTERVAL_S", 0.01)
    sent, asked = [], []
    row = {"key": {"student": "s2"}, "events": 1}
    subscription = _subscription([QueryError("no such student"), [row]], sent, asked)
    subscription.mark({"s1"})
    await _settled(subscription)
    assert (asked, sent) == ([{"s1"}], [])
    subscription.mark({"s2"})
    await _settled(subscription)
    assert asked == [{"s1"}, {"s2"}]
    assert sent == [{"subscription": "m", "type": "update", "rows": [row]}]


async def test_an_update_holds_only_rows_that_differ_from_what_the_subscriber_has(monkeypatch):
    monkeypatch.setattr(subscriptions, "UPDATE_INTERVAL_S", 0.01)
    sent, asked = [], []
    s1, s2 = {"key": {"student": "s1"}, "events": 3}, {"key": {"student": "s2"}, "events": 1}
    s2_later = {"key": {"student": "s2"}, "events": 2}
    unkeyed = {"key": {"class_id": "c"}, "events": 9}  # no student to compare by: always sent
    subscription = _subscription(
        [[s1, s2], [dict(reversed(list(s1.items())))], [s1, s2_later, unkeyed], [s2_later, unkeyed], [s1, s2]],
        sent, asked)
    await subscription.send_full()
    # A change the result already held (its changelog record came late): same row, nothing sent.
    subscription.mark({"s1"})
    await _settled(subscription)
    assert sent == [{"subscription": "m", "type": "result", "result": [s1, s2]}]
    subscription.mark({"s1", "s2"})
    await _settled(subscription)
    assert sent[1:] == [{"subscription": "m", "type": "update", "rows": [s2_later, unkeyed]}]
    subscription.mark({"s2"})
    await _settled(subscription)
    assert sent[2:] == [{"subscription": "m", "type": "update", "rows": [unkeyed]}]
    # A whole result is sent as it is, and what the subscriber has starts again from it.
    subscription.mark(None)
    await _settled(subscription)
    assert sent[3:] == [{"subscription": "m", "type": "result", "result": [s1, s2]}]
    assert asked == [None, {"s1"}, {"s1", "s2"}, {"s2"}, None]
