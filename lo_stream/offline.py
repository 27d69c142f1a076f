"""Offline mode: run reducers over a list of events or a log file, in-process, with no Kafka.

For researchers and notebooks: the very same reducer code and the same folding as the worker
(`lo_stream.tables.entries.fold`), so a table computed here equals the worker's for the same
events.

    >>> from lo_stream import offline
    >>> result = offline.run("class.jsonl", reducers="writing")       # doctest: +SKIP
    >>> result.tables["lo_stream.writing.event_count"]["ana"]          # doctest: +SKIP
    {'count': 42}
    >>> result.frame("lo_stream.writing.event_count")                 # doctest: +SKIP

``lo-stream offline PATH --module writing`` does the same from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from lo_stream.blocking import run_blocking
from lo_stream.envelopes import BadLine, Identity, MalformedEventError, check_envelope, parse_log_line, student_of
from lo_stream.modules import load_modules
from lo_stream.reducers import Reducer, registry
from lo_stream.tables.entries import Batch, fold

if TYPE_CHECKING:
    import pandas

__all__ = ["OfflineResult", "arun", "run", "select_reducers"]

PARTITION = 0  # offline, every event is on one partition, at its position in the input


@dataclass
class OfflineResult:
    """Each reducer's table (key → state), and what could not be used."""

    reducers: list[Reducer]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: int = 0
    errors: list[dict] = field(default_factory=list)  # events a reducer raised on
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def frame(self, reducer_id: str) -> "pandas.DataFrame":
        """A reducer's table as a DataFrame: one row per key, state fields as (dotted) columns."""
        import pandas

        reducer = next((r for r in self.reducers if r.id == reducer_id), None)
        if reducer is None:
            raise KeyError(f"no table for {reducer_id!r} (offline tables: {', '.join(self.tables) or 'none'})")
        table = self.tables[reducer_id]
        states = [state if isinstance(state, dict) else {"state": state} for state in table.values()]
        frame = pandas.json_normalize(states) if states else pandas.DataFrame()
        frame.index = pandas.Index(list(table), name="+".join(reducer.scope))
        return frame


def select_reducers(reducers: str | Sequence[str | Reducer] | None = None) -> list[Reducer]:
    """Reducers by module (entry point name or package), by id, or all installed ones.

    >>> [r.id for r in select_reducers(["lo_stream.writing.event_count"])]
    ['lo_stream.writing.event_count']
    """
    if not isinstance(reducers, str) and reducers is not None and all(isinstance(r, Reducer) for r in reducers):
        return list(reducers)
    modules = load_modules()
    if reducers is None:
        return list(registry)
    if isinstance(reducers, str):
        module = next((m for m in modules if reducers in (m.name, m.package)), None)
        if module is None:
            installed = ", ".join(m.name for m in modules) or "none"
            raise KeyError(f"no module {reducers!r} is installed (installed: {installed}); see lo-stream modules")
        return list(module.reducers)
    return [r if isinstance(r, Reducer) else registry.get(r) for r in reducers]


async def arun(
    events: Iterable[dict] | str | Path,
    reducers: str | Sequence[str | Reducer] | None = None,
    *,
    user: str | None = None,
) -> OfflineResult:
    """`run`, for code already inside an event loop."""
    result = OfflineResult(select_reducers(reducers))
    entries: dict[str, dict[str, dict]] = {r.id: {} for r in result.reducers}
    for offset, envelope in enumerate(_envelopes(events, user, result)):
        result.events += 1
        batch = Batch(PARTITION, [(offset, student_of(envelope), [envelope])])  # its student checked by _envelopes
        for reducer in result.reducers:
            runs = batch.runs(reducer)
            if not runs:
                continue
            table = entries[reducer.id]
            folded = await fold(reducer, runs, table.get)
            table.update(folded.changed)
            result.errors.extend(
                {"reducer": reducer.id, "key": f.item.key, "event": f.item.envelope, "error": f.error}
                for f in folded.failures
            )
    result.tables = {rid: {key: entry["state"] for key, entry in table.items()} for rid, table in entries.items()}
    return result


def run(
    events: Iterable[dict] | str | Path,
    reducers: str | Sequence[str | Reducer] | None = None,
    *,
    user: str | None = None,
) -> OfflineResult:
    """Fold `events` (envelopes, or a JSON-lines log file) through `reducers`, in order.

    `reducers`: a module name (``"writing"``), a list of reducer ids, or None for every installed
    reducer. `user` says whose raw (non-envelope) events in a file are. Works in notebooks too
    (where an event loop is already running).
    """
    return run_blocking(arun(events, reducers, user=user))


def _envelopes(events: Iterable[dict] | str | Path, user: str | None, result: OfflineResult) -> Iterator[dict]:
    if not isinstance(events, (str, Path)):
        for position, envelope in enumerate(events):
            try:
                check_envelope(envelope, where=f"event {position}")  # as the worker checks each
            except MalformedEventError as exc:
                raise ValueError(f"{exc} (envelopes as the gateway stores them: lo_stream.envelopes): "
                                 f"{envelope!r:.200}") from None
            yield envelope
        return
    identity = Identity.of(user, "offline") if user else None
    path = Path(events)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such log file")
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield parse_log_line(line.rstrip(b"\r\n"), identity, "lo_stream.offline")[1]
            except BadLine as exc:
                result.bad_lines.append((number, str(exc)))
