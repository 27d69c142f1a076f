"""Google Docs text rebuilt from the edit commands Google's editor saves, with Learning Observer's
rules (its ``writing_observer/reconstruct_doc.py``), so that both give the same text and cursor.

A document is a buffer of characters indexed from 1 (Google's indices). Commands:

- ``is`` (insert ``s`` before index ``ibi``) and ``ds`` (delete ``si``..``ei``, inclusive). An index
  beyond the end means the document had text before logging began: the gap is filled with
  *unseen* characters, so later edits land where Google meant them. Unseen characters are not in
  the text a teacher reads, nor in its counts.
- ``mlti`` (``mts``: commands, in order).
- ``rplc`` and ``rvrt`` (``snapshot``: inserts ``is`` with an optional length ``sl``, each writing
  ``s`` over the ``sl`` characters at ``ibi``, ``len(s)`` if no ``sl``). ``rplc`` comes first in a
  document made from a template, ``rvrt`` after an undo.
- ``nm`` (``nmc``: a command, ``nmr``: a list naming its target; the last ``"t.*"`` item is a tab,
  which is a document of its own; with none, the command is for the document itself).
- Everything else (formatting ``as``, suggestions, styles, ``null``, ...) leaves the text alone.

The cursor (``position``) is LO's: 0 in a new document; after an insert, the index after it;
after a delete, its start; a ``rplc``/``rvrt`` moves it only when it fills a gap.

Where LO's code does something by accident, lo_stream does the sane thing (docs/writing.md):

- an index below 1 counts as 1 (LO's Python slicing reads it from the end of the text);
- a delete whose start is after its end deletes nothing (LO copies text);
- a command with a missing or mistyped field is skipped, and the rest of the event applies (LO
  raises, losing the whole event); extra fields are allowed;
- a ``snapshot`` that is not a list changes nothing, nor does an entry with a negative ``sl``;
- an ``nm`` without a command creates no tab; one whose command lacks a field creates the tab
  empty (as a well-formed command that changes nothing, e.g. formatting, does in LO).

>>> doc = Document()
>>> doc.apply({"ty": "is", "ibi": 50, "s": "H"}); doc.apply({"ty": "is", "ibi": 51, "s": "i"})
>>> doc.apply({"ty": "is", "ibi": 10, "s": "X"})
>>> doc.text, doc.position, doc.unseen
('XHi', 11, 49)
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

__all__ = ["UNSEEN", "Document", "commands_of", "tab_titles"]

UNSEEN = "\x00"
"""Stands in the buffer for a character written before logging began (LO's placeholder)."""


def _index(value: Any) -> int | None:
    return value if type(value) is int else None


class Document:
    """A document (or one tab of it): its buffer, cursor and tabs; JSON in and out by `state`."""

    __slots__ = ("buffer", "position", "tabs")

    def __init__(self, buffer: str = "", position: int = 0, tabs: dict[str, "Document"] | None = None) -> None:
        self.buffer = buffer
        self.position = position
        self.tabs = tabs if tabs is not None else {}

    # -- JSON state ---------------------------------------------------------------------------

    @classmethod
    def from_state(cls, state: dict) -> "Document":
        """The document a `state` (as `state` returns it) describes."""
        buffer = state["text"]
        for at, length in state.get("unseen_runs", ()):  # ascending, in buffer positions
            buffer = buffer[:at] + UNSEEN * length + buffer[at:]
        tabs = {tab_id: cls.from_state(tab) for tab_id, tab in (state.get("tabs") or {}).items()}
        return cls(buffer, state["position"], tabs)

    def state(self) -> dict:
        """The document as JSON: the text as read (unseen characters left out) and its counts, the
        cursor, where unseen characters sit (``unseen_runs``: [buffer index, length] pairs) and
        each tab's own state. ``words`` and ``characters`` count the tabs' text as well."""
        runs = []
        at = self.buffer.find(UNSEEN)
        while at >= 0:
            end = at
            while end < len(self.buffer) and self.buffer[end] == UNSEEN:
                end += 1
            runs.append([at, end - at])
            at = self.buffer.find(UNSEEN, end)
        text = self.text
        tabs = {tab_id: tab.state() for tab_id, tab in self.tabs.items()}
        return {
            "text": text,
            "position": self.position,
            "unseen_runs": runs,
            "characters": len(text) + sum(tab["characters"] for tab in tabs.values()),
            "words": len(text.split()) + sum(tab["words"] for tab in tabs.values()),
            "tabs": tabs,
        }

    @property
    def text(self) -> str:
        """The text as a reader sees it: characters from before logging are left out."""
        return self.buffer.replace(UNSEEN, "")

    @property
    def unseen(self) -> int:
        """How many characters of the buffer were written before logging began."""
        return self.buffer.count(UNSEEN)

    # -- commands ----------------------------------------------------------------------------

    def apply_all(self, commands: Iterable[Any]) -> None:
        for command in commands:
            self.apply(command)

    def apply(self, command: Any) -> None:
        """Apply one command; one this module does not know, or a malformed one, changes nothing."""
        if not isinstance(command, dict):
            return
        kind = command.get("ty")
        if kind == "is":
            at, string = _index(command.get("ibi")), command.get("s")
            if at is not None and isinstance(string, str):
                self._insert(max(at, 1), string)
        elif kind == "ds":
            start, end = _index(command.get("si")), _index(command.get("ei"))
            if start is not None and end is not None:
                self._delete(max(start, 1), end)
        elif kind == "mlti":
            if isinstance(command.get("mts"), list):
                self.apply_all(command["mts"])
        elif kind in ("rplc", "rvrt"):
            if isinstance(command.get("snapshot"), list):
                for entry in command["snapshot"]:
                    self._overwrite(entry)
        elif kind == "nm":
            if "nmr" in command:
                self._named(command.get("nmc"), command["nmr"])

    def _fill_to(self, length: int) -> None:
        """Pad the buffer with unseen characters up to `length`; the cursor goes after them."""
        missing = length - len(self.buffer)
        if missing > 0:
            self.buffer += UNSEEN * missing
            self.position = length + 1

    def _insert(self, at: int, string: str) -> None:
        self._fill_to(at - 1)
        self.buffer = self.buffer[: at - 1] + string + self.buffer[at - 1:]
        self.position = at + len(string)

    def _delete(self, start: int, end: int) -> None:
        # LO pads for the start and then again for the end, both measured from the length before
        # the delete: the buffer ends with more unseen characters than the end needs. They are
        # only ever at the end, so no text moves; kept so positions and `unseen` match LO's.
        length = len(self.buffer)
        extra = max(start - length, 0) + max(end - length, 0)
        if extra:
            self._fill_to(length + extra)
        if start <= end:
            self.buffer = self.buffer[: start - 1] + self.buffer[end:]
        self.position = start

    def _overwrite(self, entry: Any) -> None:
        if not isinstance(entry, dict) or entry.get("ty") != "is":
            return
        at, string = _index(entry.get("ibi")), entry.get("s")
        if at is None or not isinstance(string, str):
            return
        length = _index(entry["sl"]) if "sl" in entry else len(string)
        if length is None or length < 0:
            return
        at = max(at, 1)
        self._fill_to(at - 1)
        self.buffer = self.buffer[: at - 1] + string + self.buffer[at - 1 + length:]

    def _named(self, command: Any, names: Any) -> None:
        target = None
        if isinstance(names, list):
            target = next((n for n in reversed(names) if isinstance(n, str) and n.startswith("t.")), None)
        if target is None:
            self.apply(command)
            return
        if not isinstance(command, dict) or not isinstance(command.get("ty"), str):
            return  # no command: no tab
        if target not in self.tabs:
            self.tabs[target] = Document()
        self.tabs[target].apply(command)


# -- what events hold ------------------------------------------------------------------------


def commands_of(client: dict) -> Iterator[dict]:
    """The commands of a ``google_docs_save`` (``bundles[].commands[]``) or a ``document_history``
    (``history.changelog[][0]``) event, in order; anything not shaped like a command is skipped."""
    kind = client.get("event")
    if kind == "google_docs_save":
        bundles = client.get("bundles")
        for bundle in bundles if isinstance(bundles, list) else ():
            commands = bundle.get("commands") if isinstance(bundle, dict) else None
            for command in commands if isinstance(commands, list) else ():
                if isinstance(command, dict):
                    yield command
    elif kind == "document_history":
        history = client.get("history")
        changelog = history.get("changelog") if isinstance(history, dict) else None
        for entry in changelog if isinstance(changelog, list) else ():
            if isinstance(entry, list) and entry and isinstance(entry[0], dict):
                yield entry[0]


def _title(command: dict) -> tuple[Any, Any]:
    """(tab id, title) a command names, LO's way: ``ucp`` renames a tab (``d[0]``, ``d[1][1][1]``),
    ``ac`` adds one (``d[0]``, ``d[1][1]``), ``mkch`` names the first (``t.0``, ``d[0][1]``)."""
    data, kind = command.get("d"), command.get("ty")
    try:
        if kind == "ucp":
            return data[0], data[1][1][1]
        if kind == "ac":
            return data[0], data[1][1]
        if kind == "mkch":
            return "t.0", data[0][1]
    except (TypeError, IndexError, KeyError):
        pass
    return None, None


def tab_titles(client: dict) -> list[tuple[str, Any]]:
    """(tab id, title) pairs named by an event's commands and by those one ``mlti`` deep, in order.

    >>> tab_titles({"event": "google_docs_save", "bundles": [{"commands": [
    ...     {"ty": "mlti", "mts": [{"ty": "ac", "d": ["t.x", [0, "Notes"]]}]}]}]})
    [('t.x', 'Notes')]
    """
    found = []
    for command in commands_of(client):
        inner = command.get("mts") if command.get("ty") == "mlti" else [command]
        for leaf in inner if isinstance(inner, list) else ():
            if isinstance(leaf, dict) and leaf.get("ty") in ("ucp", "ac", "mkch"):
                tab_id, title = _title(leaf)
                if isinstance(tab_id, str) and tab_id:
                    found.append((tab_id, title))
    return found
