"""Google Docs text rebuilt from edit commands (lo_stream.google_docs): hand-written examples with
the text written out, LO's accidents each on their own, and differential tests against `Rules`, a
cell-by-cell model written from the rules in the module's docstring, on thousands of generated
command sequences per command kind."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lo_stream.google_docs import UNSEEN, Document, commands_of

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEQUENCES_PER_KIND = 2000


def typed(*commands: dict) -> Document:
    doc = Document()
    doc.apply_all(commands)
    return doc


def is_(ibi: int, s: str, **extra) -> dict:
    return {"ty": "is", "ibi": ibi, "s": s, **extra}


def ds(si: int, ei: int, **extra) -> dict:
    return {"ty": "ds", "si": si, "ei": ei, **extra}


def nm(command: dict, *names) -> dict:
    return {"ty": "nm", "nmc": command, "nmr": list(names)}


# -- the oracle --------------------------------------------------------------------------------


class Rules:
    """The rules, one cell a character: a cell holds the character, or None for one written
    before logging began. Indices are 1-based; only well-formed commands are modelled, except
    that an index below 1 counts as 1 and a delete whose start is after its end deletes nothing."""

    def __init__(self) -> None:
        self.cells: list[str | None] = []
        self.cursor = 0
        self.tabs: dict[str, Rules] = {}

    def run(self, command: dict) -> None:
        kind = command["ty"]
        if kind == "is":
            self.insert(max(command["ibi"], 1), command["s"])
        elif kind == "ds":
            self.delete(max(command["si"], 1), command["ei"])
        elif kind == "mlti":
            for inner in command["mts"]:
                self.run(inner)
        elif kind in ("rplc", "rvrt"):
            for entry in command["snapshot"]:
                if entry.get("ty") == "is":
                    self.write_over(max(entry["ibi"], 1), entry["s"], entry.get("sl", len(entry["s"])))
        elif kind == "nm":
            tabs = [name for name in command["nmr"] or [] if isinstance(name, str) and name.startswith("t.")]
            if tabs:
                self.tabs.setdefault(tabs[-1], Rules()).run(command["nmc"])
            else:
                self.run(command["nmc"])

    def insert(self, ibi: int, s: str) -> None:
        if ibi > len(self.cells) + 1:
            self.cells += [None] * (ibi - 1 - len(self.cells))
        self.cells[ibi - 1:ibi - 1] = list(s)
        self.cursor = ibi + len(s)

    def delete(self, si: int, ei: int) -> None:
        before = len(self.cells)
        self.cells += [None] * (max(si - before, 0) + max(ei - before, 0))  # LO pads twice
        if si <= ei:
            del self.cells[si - 1:ei]
        self.cursor = si

    def write_over(self, ibi: int, s: str, sl: int) -> None:
        if ibi - 1 > len(self.cells):
            self.cells += [None] * (ibi - 1 - len(self.cells))
            self.cursor = ibi
        self.cells[ibi - 1:ibi - 1 + sl] = list(s)

    def picture(self) -> tuple:
        buffer = "".join(UNSEEN if cell is None else cell for cell in self.cells)
        return buffer, self.cursor, {name: tab.picture() for name, tab in self.tabs.items()}


def picture(doc: Document) -> tuple:
    """Buffer (unseen characters included), cursor and tabs, as `Rules.picture` gives them."""
    return doc.buffer, doc.position, {name: picture(tab) for name, tab in doc.tabs.items()}


def by_the_rules(commands: list) -> tuple:
    rules = Rules()
    for command in commands:
        rules.run(command)
    return rules.picture()


# -- generated commands ------------------------------------------------------------------------


class Generator:
    """Well-formed command sequences from an empty document, with indices often past the end (as
    for a document that had text before logging began). `length` is only a rough guide."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.length = 0

    def sequence(self, kinds: list[str]) -> list[dict]:
        return [self.command(self.rng.choice(kinds)) for _ in range(self.rng.randint(1, 12))]

    def index(self) -> int:
        roll = self.rng.random()
        if roll < 0.5:
            return self.rng.randint(1, self.length + 1)
        if roll < 0.65:
            return self.length + self.rng.randint(1, 3)
        return self.length + self.rng.randint(2, 50)

    def text(self, most: int = 6) -> str:
        return "".join(self.rng.choice("ab Z.\n") for _ in range(self.rng.randint(0, most)))

    def extra(self) -> dict:
        return {"sugid": "s.1", "d": [1, 2]} if self.rng.random() < 0.1 else {}

    def command(self, kind: str, depth: int = 0) -> dict:
        rng = self.rng
        if kind == "is":
            command = is_(self.index(), self.text(), **self.extra())
            self.length = max(self.length, command["ibi"] - 1) + len(command["s"])
            return command
        if kind == "ds":
            si = self.index()
            ei = si + rng.choice([0, 0, 1, 3, rng.randint(0, 30)])
            self.length = max(self.length, si) - min(ei - si, self.length // 2)
            return ds(si, ei, **self.extra())
        if kind in ("rplc", "rvrt"):
            return {"ty": kind, "snapshot": [self.snapshot_entry() for _ in range(rng.randint(0, 3))]}
        if kind == "mlti":
            inner = ["is", "is", "ds", "rplc", "rvrt", "no-op"] + (["mlti", "nm", "nm tab"] if depth < 2 else [])
            return {"ty": "mlti", "mts": [self.command(rng.choice(inner), depth + 1) for _ in range(rng.randint(0, 5))]}
        if kind in ("nm", "nm tab"):
            tab = rng.choice(["t.0", "t.1", "t.kix"])
            names = (rng.choice([[tab], ["kix.1", tab], [tab, "kix.2"], ["t.0", tab], [tab, 7]]) if kind == "nm tab"
                     else rng.choice([[], None, ["kix.1"], ["tt.0", 3]]))
            return {"ty": "nm", "nmc": self.command(rng.choice(["is", "is", "ds", "rplc", "mlti", "no-op"]), depth + 1),
                    "nmr": names}
        # no-ops: formatting, suggestions, tab titles, null, unknown kinds
        return rng.choice([{"ty": "as", "si": 1, "ei": self.index(), "st": "text", "sm": {"ts_bd": True}},
                           {"ty": "null"}, {"ty": "iss", "ibi": 1, "s": "suggested"}, {"ty": "dss", "si": 1, "ei": 2},
                           {"ty": "ac", "d": ["t.1", [0, "Notes"]]}, {"ty": "zzz"}])

    def snapshot_entry(self) -> dict:
        if self.rng.random() < 0.1:
            return {"ty": "as", "si": 1, "ei": 2, "st": "text", "sm": {}}  # not an insert: left alone
        entry = is_(self.index(), self.text(8))
        if self.rng.random() < 0.5:
            entry["sl"] = self.rng.choice([0, 1, len(entry["s"]), self.rng.randint(0, 30)])
        self.length = max(self.length, entry["ibi"] - 1 + len(entry["s"]))
        return entry


MIX = ["is", "is", "is", "ds", "ds", "mlti", "rplc", "rvrt", "nm", "nm tab", "no-op"]
KINDS = {
    "is": ["is"],
    "ds": ["ds"],
    "is and ds": ["is", "ds"],
    "mlti": ["mlti"],
    "rplc": ["rplc", "is"],
    "rvrt": ["rvrt", "is", "ds"],
    "nm without a tab": ["nm", "is", "ds"],
    "nm into tabs": ["nm tab", "is"],
    "no-ops": ["no-op", "is"],
    "mix": MIX,
}


def sequences(seed: str, kinds: list[str], count: int = SEQUENCES_PER_KIND):
    rng = random.Random(seed)
    for _ in range(count):
        yield Generator(rng).sequence(kinds)


# -- hand-written examples ---------------------------------------------------------------------


def test_a_new_document_is_empty_with_the_cursor_at_0():
    doc = Document()
    assert (doc.text, doc.position, doc.tabs) == ("", 0, {})


def test_typing_gives_the_text_and_leaves_the_cursor_after_it():
    doc = typed(is_(1, "Hello"), is_(6, " world"), is_(1, "Oh, "))
    assert (doc.text, doc.position, doc.unseen) == ("Oh, Hello world", 5, 0)


def test_text_from_before_logging_is_left_out_and_later_edits_land_where_google_meant():
    doc = typed(is_(50, "H"), is_(51, "i"), is_(10, "X"))
    assert (doc.text, doc.position, doc.unseen) == ("XHi", 11, 49)
    assert doc.buffer == UNSEEN * 9 + "X" + UNSEEN * 40 + "Hi"


def test_a_delete_removes_its_first_and_last_index_and_leaves_the_cursor_at_its_start():
    doc = typed(is_(1, "Hello world"), ds(6, 11))
    assert (doc.text, doc.position) == ("Hello", 6)


def test_a_delete_past_the_end_pads_for_its_start_and_again_for_its_end_as_lo_does():
    empty = typed(ds(3, 5))  # 3 + 5 unseen added, 3 deleted
    assert (empty.buffer, empty.position) == (UNSEEN * 5, 3)
    doc = typed(is_(1, "abc"), ds(5, 6))  # 2 + 3 unseen added, 2 deleted
    assert (doc.buffer, doc.position, doc.text) == ("abc" + UNSEEN * 3, 5, "abc")


def test_a_batch_applies_its_commands_in_order():
    doc = typed({"ty": "mlti", "mts": [is_(1, "abc"), ds(2, 2), is_(2, "X"), {"ty": "mlti", "mts": [is_(4, "!")]}]})
    assert (doc.text, doc.position) == ("aXc!", 5)


def test_a_template_rplc_fills_an_empty_document_without_moving_the_cursor():
    doc = typed({"ty": "rplc", "snapshot": [is_(1, "Dear class,\n")]})
    assert (doc.text, doc.position) == ("Dear class,\n", 0)


def test_rplc_writes_its_length_of_characters_over_existing_text():
    def replaced(**entry):
        return typed(is_(1, "abcdef"), {"ty": "rplc", "snapshot": [{"ty": "is", **entry}]})

    assert replaced(ibi=3, s="XY").text == "abXYef"  # sl defaults to len(s)
    assert replaced(ibi=3, s="XY", sl=0).text == "abXYcdef"  # writes over nothing: an insert
    assert replaced(ibi=3, s="XY", sl=1).text == "abXYdef"
    assert replaced(ibi=3, s="XY", sl=30).text == "abXY"
    assert replaced(ibi=3, s="XY").position == 7  # the cursor stays


def test_a_revert_after_typing_brings_the_snapshot_back_and_keeps_the_cursor():
    doc = typed(is_(1, "Hello world"), ds(6, 11))
    doc.apply({"ty": "rvrt", "snapshot": [is_(1, "Hello world", sl=5)]})
    assert (doc.text, doc.position) == ("Hello world", 6)


def test_a_snapshot_past_the_end_fills_the_gap_and_moves_the_cursor_to_it():
    doc = typed({"ty": "rplc", "snapshot": [is_(5, "abc"), is_(1, "Z", sl=0)]})
    assert (doc.buffer, doc.position, doc.text) == ("Z" + UNSEEN * 4 + "abc", 5, "Zabc")


def test_named_commands_write_into_their_tabs_and_the_last_tab_named_wins():
    doc = typed(
        nm(is_(1, "first tab"), "t.0"),
        nm(is_(1, "second"), "t.0", "t.1"),  # the last "t.*" name is the target
        nm(is_(10, " more"), "t.0", "kix.xyz"),
        nm(is_(1, "main text")),  # no tab: the document itself
        {"ty": "nm", "nmc": is_(1, "Main: "), "nmr": None},
        nm({"ty": "rplc", "snapshot": [is_(1, "from a template")]}, "t.2"),
    )
    assert doc.text == "Main: main text"
    assert {name: (tab.text, tab.position) for name, tab in doc.tabs.items()} == {
        "t.0": ("first tab more", 15), "t.1": ("second", 7), "t.2": ("from a template", 0)}


def test_formatting_suggestions_titles_and_unknown_commands_leave_the_text_alone():
    doc = typed(is_(1, "kept"))
    doc.apply_all([{"ty": "as", "si": 1, "ei": 4, "st": "text", "sm": {"ts_bd": True}}, {"ty": "null"},
                   {"ty": "iss", "ibi": 1, "s": "suggested", "sugid": "s.1"}, {"ty": "dss", "si": 1, "ei": 4},
                   {"ty": "ucp", "d": ["t.0", [0, [0, "Title"]]]}, {"ty": "brand new kind"}, {}])
    assert (doc.buffer, doc.position, doc.tabs) == ("kept", 5, {})


# -- where LO's code does something by accident -----------------------------------------------


def test_an_index_below_one_counts_as_one():
    assert typed(is_(1, "xyz"), is_(0, "A"), is_(-4, "B")).text == "BAxyz"
    assert typed(is_(1, "xyz"), ds(0, 1)).text == "yz"
    assert typed(is_(1, "xyz"), ds(-3, 2)).text == "z"
    assert typed(is_(1, "xyz"), {"ty": "rplc", "snapshot": [is_(-2, "Q")]}).text == "Qyz"


def test_a_delete_whose_start_is_after_its_end_deletes_nothing():
    doc = typed(is_(1, "abcdef"), ds(4, 2))
    assert (doc.text, doc.position) == ("abcdef", 4)
    past_the_end = typed(is_(1, "abc"), ds(6, 5))  # still pads (3 + 2) and moves the cursor
    assert (past_the_end.buffer, past_the_end.position) == ("abc" + UNSEEN * 5, 6)


MALFORMED = [
    None, "is", 7, [is_(1, "lost")], {"ty": "is", "s": "lost"}, {"ty": "is", "ibi": "1", "s": "lost"},
    {"ty": "is", "ibi": 1.0, "s": "lost"}, {"ty": "is", "ibi": True, "s": "lost"}, {"ty": "is", "ibi": 1, "s": None},
    {"ty": "is", "ibi": 1, "s": 5}, {"ty": "ds", "si": 1}, {"ty": "ds", "si": "1", "ei": 2},
    {"ty": "ds", "si": 1, "ei": None},
    {"ty": "mlti"}, {"ty": "mlti", "mts": is_(1, "lost")}, {"ty": "rplc"}, {"ty": "rvrt", "snapshot": "lost"},
    {"ty": "rplc", "snapshot": is_(1, "lost")}, {"ty": "nm", "nmc": is_(1, "lost")}, nm({"ty": "is", "s": "lost"}),
]
MALFORMED_ENTRIES = [
    None, "is", is_(1, "lost", sl=-1), is_(1, "lost", sl="2"), is_(1, "lost", sl=None),
    {"ty": "is", "ibi": 1}, {"ty": "is", "ibi": None, "s": "lost"}, {"ty": "is", "ibi": [1], "s": "lost"},
]


def test_malformed_commands_are_skipped_and_the_rest_of_the_event_applies():
    doc = typed(is_(1, "ab"), *MALFORMED, is_(3, "c"),
                {"ty": "mlti", "mts": [*MALFORMED, is_(4, "d")]},
                {"ty": "rvrt", "snapshot": [*MALFORMED_ENTRIES, is_(1, "A")]})
    assert (doc.buffer, doc.position, doc.tabs) == ("Abcd", 5, {})


def test_extra_fields_are_allowed():
    doc = typed(is_(1, "abcd", sugid="s.1"), ds(1, 1, x=[1]),
                {"ty": "rplc", "snapshot": [is_(1, "B", extra=True)], "y": 2}, nm(is_(1, "tab", z=0), "t.0") | {"w": 3})
    assert (doc.text, doc.tabs["t.0"].text) == ("Bcd", "tab")


def test_a_snapshot_that_is_not_a_list_or_an_entry_with_a_negative_length_changes_nothing():
    doc = typed(is_(1, "abc"), {"ty": "rplc", "snapshot": {"0": is_(1, "X")}},
                {"ty": "rvrt", "snapshot": [is_(1, "Y", sl=-1), is_(3, "Z")]})
    assert (doc.text, doc.position) == ("abZ", 4)


def with_malformed(rng: random.Random, commands: list) -> list:
    """The same commands with malformed ones slipped in among them, in batches and in snapshots."""
    out = []
    for command in commands:
        if rng.random() < 0.3:
            out.append(rng.choice(MALFORMED))
        if command["ty"] == "mlti":
            command = {**command, "mts": with_malformed(rng, command["mts"])}
        elif command["ty"] in ("rplc", "rvrt"):
            entries = list(command["snapshot"])
            entries.insert(rng.randint(0, len(entries)), rng.choice(MALFORMED_ENTRIES))
            command = {**command, "snapshot": entries}
        out.append(command)
    return out


@fuzz
@given(st.randoms(use_true_random=False))
def test_malformed_commands_anywhere_change_nothing_else(rng):
    commands = Generator(rng).sequence(MIX)
    assert picture(typed(*with_malformed(rng, commands))) == by_the_rules(commands)


# -- differential: the module against the rules ----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_generated_commands_rebuild_the_text_and_cursor_the_rules_describe(kind):
    for commands in sequences(kind, KINDS[kind]):
        assert picture(typed(*commands)) == by_the_rules(commands), commands


@fuzz
@given(st.randoms(use_true_random=False))
def test_any_mix_of_commands_matches_the_rules(rng):  # Hypothesis shrinks a failure to a short one
    commands = Generator(rng).sequence(MIX)
    assert picture(typed(*commands)) == by_the_rules(commands)


def test_save_and_history_events_give_the_same_text_as_their_commands():
    rng = random.Random("events")
    for commands in sequences("events", MIX, 500):
        cut = sorted(rng.sample(range(len(commands) + 1), 2))
        bundles = [commands[:cut[0]], commands[cut[0]:cut[1]], commands[cut[1]:]]
        save = {"event": "google_docs_save", "bundles": [{"commands": bundle, "sid": "x"} for bundle in bundles]}
        changelog = [[command, 1700000000 + n, "user", n] for n, command in enumerate(commands)]
        history = {"event": "document_history", "history": {"changelog": changelog}}
        for event in (save, history):
            assert list(commands_of(event)) == commands
            assert picture(typed(*commands_of(event))) == by_the_rules(commands), event


def test_commands_of_skips_what_is_not_a_command():
    save = {"event": "google_docs_save", "bundles": [None, {"commands": "x"}, {"commands": [1, is_(1, "a")]}, {}]}
    history = {"event": "document_history", "history": {"changelog": [[], "x", [None], [is_(1, "a"), 5]]}}
    assert list(commands_of(save)) == list(commands_of(history)) == [is_(1, "a")]
    assert list(commands_of({"event": "keystroke"})) == list(commands_of({"event": "google_docs_save"})) == []
    assert list(commands_of({"event": "document_history", "history": []})) == []


# -- state --------------------------------------------------------------------------------------


def test_a_state_read_back_is_the_same_document():
    for commands in sequences("state", MIX):
        doc = typed(*commands)
        state = json.loads(json.dumps(doc.state()))  # JSON in and out
        assert picture(Document.from_state(state)) == picture(doc), commands


def test_words_and_characters_count_the_tabs_but_not_text_from_before_logging():
    doc = typed(is_(5, "two words"), nm(is_(1, "three more words"), "t.0"), nm(is_(3, "x"), "t.1"))
    state = doc.state()
    assert (state["text"], state["characters"], state["words"]) == ("two words", 9 + 16 + 1, 2 + 3 + 1)
    assert state["unseen_runs"] == [[0, 4]]
    assert (state["tabs"]["t.0"]["words"], state["tabs"]["t.1"]["unseen_runs"]) == (3, [[0, 2]])
