"""Under exactly-once a worker holds a transactional producer for exactly the partitions it actively
owns, across rebalances (`lo_stream.agents.transactions`)."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from lo_stream.agents.transactions import SourceTransactions

EVENTS, CHANGELOG, LEADER = "app.events", "app-counts-changelog", "app-__assignor-__leader"


class StandInAssignor:
    """Faust's assignor as the transaction manager reads it: topic groups and this worker's standbys."""

    def __init__(self) -> None:
        self.standbys: set[TP] = set()

    def group_for_topic(self, topic: str) -> int:
        return 0 if topic == LEADER else 1

    def is_standby(self, tp: TP) -> bool:
        return tp in self.standbys


class StandInProducer:
    """Faust's producer as the transaction manager drives it: which transactions it starts and stops."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def maybe_begin_transaction(self, transactional_id: str) -> None:
        self.calls.append(("begin", transactional_id))

    async def stop_transaction(self, transactional_id: str) -> None:
        self.calls.append(("stop", transactional_id))


def _assignment(active: range, standby: range = range(0)) -> set[TP]:
    return ({TP(LEADER, 0)} | {TP(EVENTS, p) for p in active} | {TP(CHANGELOG, p) for p in active}
            | {TP(CHANGELOG, p) for p in standby})


async def test_a_partition_that_moves_away_and_back_gets_a_new_producer():
    assignor, producer = StandInAssignor(), StandInProducer()
    app = SimpleNamespace(conf=SimpleNamespace(id="app"), assignor=assignor)
    transactions = SourceTransactions(SimpleNamespace(app=app), consumer=None, producer=producer)

    # One worker owns the four partitions.
    first = _assignment(range(4))
    await transactions.on_rebalance(first, set(), first)
    assert producer.calls == [("begin", "app-0-0")] + [("begin", f"app-1-{p}") for p in range(4)]

    # A second worker takes partitions 0 and 1; their changelogs stay here as standbys. Faust's
    # assignor counts the whole topic group of a standby partition as standby, the events topic's
    # too, so Faust kept these two producers (and the other worker's then fenced them).
    producer.calls.clear()
    assignor.standbys = {TP(topic, p) for topic in (EVENTS, CHANGELOG) for p in (0, 1)}
    second = _assignment(range(2, 4), standby=range(2))
    await transactions.on_rebalance(second, first - second, set())
    assert producer.calls == [("stop", "app-1-0"), ("stop", "app-1-1")]

    # The other worker stops: 0 and 1 come back, with fresh producers; 2 and 3 keep theirs.
    producer.calls.clear()
    assignor.standbys = set()
    await transactions.on_rebalance(first, set(), first - second)
    assert producer.calls == [("begin", "app-1-0"), ("begin", "app-1-1")]

    # Nothing moves: nothing is stopped or started.
    producer.calls.clear()
    await transactions.on_rebalance(first, set(), set())
    assert producer.calls == []
