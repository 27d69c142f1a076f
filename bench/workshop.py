"""The workshop reducer every throughput competitor runs: per student, the event count and the
median interval between the last 10 timestamps, kept as JSON.

`workshop` is the one implementation: the raw loop and the Quix Streams app call it directly
(the decorator returns it unchanged), and this module is also a lo_stream module (entry point
``workshop``, see `bench.harness.worker_env`) whose one reducer it is.
"""

from __future__ import annotations

import statistics

from lo_stream import student_event_reducer

__all__ = ["NULL_STATE", "WINDOW", "workshop"]

WINDOW = 10
NULL_STATE = {"count": 0, "timestamps": [], "median_interval_ms": None}


@student_event_reducer(null_state=NULL_STATE)
def workshop(event: dict, state: dict) -> dict:
    """The next state after one envelope.

    >>> workshop({"client": {"timestamp": 5}}, workshop({"client": {"timestamp": 2}}, NULL_STATE))
    {'count': 2, 'timestamps': [2, 5], 'median_interval_ms': 3}
    """
    timestamps = [*state["timestamps"], event["client"]["timestamp"]][-WINDOW:]
    intervals = [later - earlier for earlier, later in zip(timestamps, timestamps[1:])]
    return {
        "count": state["count"] + 1,
        "timestamps": timestamps,
        "median_interval_ms": statistics.median(intervals) if intervals else None,
    }

