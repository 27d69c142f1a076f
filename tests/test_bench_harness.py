"""The benchmark harness's pure helpers (bench/harness.py); no Kafka, no figures asserted."""

from __future__ import annotations

import orjson
import pytest

from bench.__main__ import flatness
from bench.harness import percentiles, ratio, steady_rate, workload_messages
from bench.workshop import NULL_STATE, workshop


def test_percentiles_and_ratios():
    assert percentiles(list(range(1, 101)))["p50"] == 50.5
    assert ratio(1, 3) == 0.33 and ratio(2, None) is None and ratio(2, 0) is None
    with pytest.raises(ValueError, match="nothing was measured"):
        percentiles([])


def test_flatness_is_each_competitors_slowest_over_fastest_per_cpu_second_leaving_skipped_runs_out():
    runs = [
        {"competitor": "raw", "students": 1_000, "events_per_cpu_s": 80_000.0},
        {"competitor": "raw", "students": 1_000_000, "events_per_cpu_s": 60_000.0},
        {"competitor": "lo_stream", "students": 1_000, "events_per_cpu_s": 100_000.0},
        {"competitor": "lo_stream", "students": 10_000, "events_per_cpu_s": 150_000.0},
        {"competitor": "lo_stream", "students": 1_000_000, "events_per_cpu_s": 50_000.0},
        {"competitor": "kstreams", "students": 1_000, "skipped": "mvn not found"},
    ]
    assert flatness(runs) == {"raw": 0.75, "lo_stream": 0.33}


def test_steady_rate_ignores_the_final_commit_when_there_are_commits_in_progress():
    commits = [(10.0, 1000, 5.0), (11.0, 2000, 6.0), (12.0, 3000, 7.0), (20.0, 3500, 8.0)]
    assert steady_rate(commits, 3500, 0.0) == (1000.0, 2000, 2.0)
    assert steady_rate([(4.0, 100, 1.0)], 100, 0.0) == (25.0, 100, 1.0)  # one commit: from the start


def test_workload_gives_every_student_the_same_number_of_messages_in_order():
    messages = list(workload_messages(students=10, events=200, per_message=5))
    assert len(messages) == 40
    per_student: dict[bytes, list] = {}
    for key, value in messages:
        envelopes = orjson.loads(value)
        assert len(envelopes) == 5 and {e["metadata"]["auth"]["safe_user_id"].encode() for e in envelopes} == {key}
        per_student.setdefault(key, []).extend(e["client"]["timestamp"] for e in envelopes)
    assert len(per_student) == 10 and all(len(t) == 20 and t == sorted(t) for t in per_student.values())
    single = list(workload_messages(students=10, events=20, per_message=1))
    assert isinstance(orjson.loads(single[0][1]), dict)  # a lone envelope, not a list
    with pytest.raises(ValueError, match="multiple of events per message"):
        list(workload_messages(students=10, events=21, per_message=5))


def test_the_workshop_reducer_keeps_count_and_median_of_the_last_ten():
    state = NULL_STATE
    for timestamp in range(0, 1200, 100):
        state = workshop({"client": {"timestamp": timestamp}}, state)
    assert state == {"count": 12, "timestamps": list(range(200, 1200, 100)), "median_interval_ms": 100}
