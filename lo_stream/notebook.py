"""For Jupyter: a module's export from a running deployment, or its reducers over a log file, as
pandas DataFrames.

    >>> from lo_stream import notebook
    >>> notebook.query("writing.course_overview", {"course_id": "demo-class"})   # doctest: +SKIP
    >>> frames = notebook.offline("class.jsonl", "writing")                        # doctest: +SKIP
    >>> frames["lo_stream.writing.event_count"]                                    # doctest: +SKIP

`query` signs in with your token (``token=`` or the environment variable ``LO_STREAM_QUERY_TOKEN``;
an admin makes one with ``lo-stream users add NAME``) and asks the worker at ``url=`` (default: the
settings' ``query_url``). `offline` needs no Kafka at all: see `lo_stream.offline`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lo_stream import offline as offline_mode
from lo_stream.blocking import run_blocking
from lo_stream.query.client import TOKEN_ENV, QueryClient
from lo_stream.settings import load_settings

if TYPE_CHECKING:
    import pandas

__all__ = ["offline", "query", "result_frame"]


def query(export: str, params: dict[str, Any] | None = None, *, url: str | None = None,
          token: str | None = None) -> "pandas.DataFrame":
    """Run `export` (``<module>.<export>``) with `params`; one row per item of the answer, indexed
    by its key (e.g. the student). Raises `lo_stream.query.client.BackendError` with the query
    layer's reason when it refuses or cannot be reached.

    >>> query("mymodule.overview", {"course_id": "demo-class"}, token="...")   # doctest: +SKIP
    """
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(f"no token: pass token=... or set {TOKEN_ENV} (an admin makes one: lo-stream users add NAME)")
    client = QueryClient(url or load_settings().query_url, token)

    async def ask() -> Any:
        try:
            return await client.run(export, dict(params or {}), None)
        finally:
            await client.close()

    return result_frame(run_blocking(ask()))


def result_frame(result: Any) -> "pandas.DataFrame":
    """A query's answer as a DataFrame: the items' ``key`` fields become the index, their other
    fields the columns (``provenance`` is left out: it is in the JSON answer)."""
    import pandas

    items = result if isinstance(result, list) else [result]
    keys = [item.get("key", {}) for item in items]
    rows = [{name: value for name, value in item.items() if name not in ("key", "provenance")} for item in items]
    names = list(dict.fromkeys(name for key in keys for name in key))
    if not names:
        return pandas.DataFrame(rows)
    index = pandas.MultiIndex.from_tuples([tuple(key.get(name) for name in names) for key in keys], names=names)
    return pandas.DataFrame(rows, index=index.get_level_values(0) if len(names) == 1 else index)


def offline(path: str | Path, module: str) -> dict[str, "pandas.DataFrame"]:
    """Run `module`'s reducers (``"writing"``, ``"mymodule"``) over a JSON-lines log file, with no
    Kafka; one DataFrame per reducer id (one row per key). Lines that cannot be used and events a
    reducer raised on are reported as warnings."""
    result = offline_mode.run(path, module)
    if result.bad_lines:
        number, reason = result.bad_lines[0]
        warnings.warn(f"{path}: {len(result.bad_lines)} lines not used (first, line {number}: {reason})", stacklevel=2)
    if result.errors:
        first = result.errors[0]
        warnings.warn(f"{len(result.errors)} events raised in reducers (first: {first['reducer']} on "
                      f"{first['key']}: {first['error']})", stacklevel=2)
    return {reducer.id: result.frame(reducer.id) for reducer in result.reducers}
