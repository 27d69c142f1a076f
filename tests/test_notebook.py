"""Notebooks: `lo_stream.notebook` gives DataFrames, and the example notebook (docs/notebook.ipynb)
runs from top to bottom in a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import orjson
import pytest
from nbclient import NotebookClient

from lo_stream import notebook
from lo_stream.query.client import TOKEN_ENV
from tests.support import envelope

DOCS = Path(__file__).parent.parent / "docs"


def test_offline_gives_one_frame_per_reducer(tmp_path):
    events = [envelope("ana", event="keystroke", timestamp=1), envelope("ana", event="keystroke", timestamp=2),
              envelope("bo", event="keystroke", timestamp=5)]
    log = tmp_path / "class.jsonl"
    log.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events) + b"not json\n")
    with pytest.warns(UserWarning, match="1 lines not used \\(first, line 4: not JSON"):
        frames = notebook.offline(log, "writing")
    assert frames["lo_stream.writing.event_count"]["count"].to_dict() == {"ana": 2, "bo": 1}
    assert frames["lo_stream.writing.typing_speed"].loc["ana", "median_interval_ms"] == 1


def test_query_results_become_frames_indexed_by_key():
    frame = notebook.result_frame([{"key": {"student": "ana"}, "events": 3, "provenance": [{"offset": 7}]},
                                   {"key": {"student": "bo"}, "events": 0}])
    assert frame.index.name == "student" and frame["events"].to_dict() == {"ana": 3, "bo": 0}
    assert "provenance" not in frame
    by_document = notebook.result_frame([{"key": {"student": "ana", "doc_id": "d1"}, "words": 2}])
    assert by_document.loc[("ana", "d1"), "words"] == 2


def test_query_without_a_token_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match=f"set {TOKEN_ENV} \\(an admin makes one: lo-stream users add NAME\\)"):
        notebook.query("writing.course_overview", {"course_id": "c"})


def test_the_example_notebook_runs(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)  # the live part then says it is skipped
    example = nbformat.read(DOCS / "notebook.ipynb", as_version=4)
    NotebookClient(example, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(DOCS)}}).execute()
    printed = [output.get("text", "") for cell in example.cells for output in cell.get("outputs", [])]
    assert "240 events from 3 students\n" in printed
    assert "no LO_STREAM_QUERY_TOKEN set: skipping the live query\n" in printed
