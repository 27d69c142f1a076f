"""The query language's node semantics and errors, run by the executor over tables held in memory.

(Unit tests: the tables are a dict here; tests/test_query_api.py runs the same against workers.)
"""

from __future__ import annotations

import json

import pytest

from lo_stream.query import call, combine, course_query, join, keys, map_values, parameter, query, select, variable
from lo_stream.query.executor import AccessDenied, Caller, Execution
from lo_stream.query.functions import FunctionRegistry, published
from lo_stream.query.language import QueryError, validate
from lo_stream.reducers import ReducerRegistry, event_reducer, student_event_reducer

REDUCERS = ReducerRegistry()


@student_event_reducer(null_state={"count": 0}, registry=REDUCERS)
def counter(event, state):
    return state


@event_reducer(scope=("student", "doc_id"), null_state={"words": 0}, registry=REDUCERS)
def words(event, state):
    return state


COUNTER = f"{__name__}.counter"
WORDS = f"{__name__}.words"


@published("test.double")
def double(value, factor=2):
    return value * factor


@published("test.explode")
def explode(value):
    raise RuntimeError("boom")


class Rosters:
    def __init__(self):
        self.rosters = {
            "alg": [{"safe_user_id": "ana", "full_name": "Ana Lima"}, {"safe_user_id": "bo", "full_name": "Bo Kim"},
                    {"safe_user_id": "cy", "full_name": "Cy Wu"}],
            "bio": [{"safe_user_id": "dee", "full_name": "Dee Ray"}],
        }
        self.teachers = {"alg": ["rivera"], "bio": ["chen"]}

    def students(self, course_id):
        return self.rosters.get(course_id)

    def course_ids(self):
        return sorted(self.rosters)

    def courses_taught_by(self, teacher):
        return [c for c, names in self.teachers.items() if teacher in names]


class Tables:
    """Stored values as the worker keeps them."""

    def __init__(self, values):
        self.values = values
        self.reads = []

    async def read(self, reducer, table_keys):
        self.reads.append((reducer.id, list(table_keys)))
        return {key: self.values.get((reducer.id, key)) for key in table_keys}


TABLES = {
    (COUNTER, "ana"): {"state": {"count": 4}, "offset": 17, "partition": 1},
    (COUNTER, "bo"): {"state": {"count": 1}, "offset": 9, "partition": 0},
    (WORDS, '["ana","d1"]'): {"state": {"words": 120}, "offset": 16, "partition": 1},
    (WORDS, '["bo","d2"]'): {"state": {"words": 7}, "offset": 8, "partition": 0},
}
ADMIN = Caller("root", "admin")


async def run(document, returns, params=None, caller=ADMIN, tables=None, **kwargs):
    validate(document, functions=published_functions(), reducers={r.id for r in REDUCERS})
    execution = Execution(
        document, params or {}, reader=tables or Tables(TABLES), rosters=Rosters(),
        reducers={r.id: r for r in REDUCERS}, caller=caller, **kwargs,
    )
    return await execution.run(returns)


def published_functions():
    from lo_stream.query.functions import functions

    return functions.names()


ROSTER = call("lo_stream.roster", parameter("course_id"))


async def test_the_course_query_one_liner_joins_every_student_with_the_roster():
    document = course_query(COUNTER, {"count": "events"})
    assert json.loads(json.dumps(document)) == document  # plain JSON: a client could send it
    rows = await run(document, "counter", {"course_id": "alg"})
    assert [(r["key"], r["events"], r["full_name"]) for r in rows] == [
        ({"student": "ana"}, 4, "Ana Lima"), ({"student": "bo"}, 1, "Bo Kim"), ({"student": "cy"}, 0, "Cy Wu"),
    ]
    assert rows[0]["provenance"] == [{"reducer": COUNTER, "version": 1, "key": "ana", "offset": 17, "partition": 1}]
    assert rows[2]["provenance"][0]["offset"] is None  # no events yet: the reducer's starting state


async def test_parameters_required_and_default():
    document = query({"p": parameter("x", required=False, default=5), "q": parameter("y")}, {"p": "p", "q": "q"})
    assert await run(document, "p") == 5
    assert await run(document, "p", {"x": 9}) == 9
    with pytest.raises(QueryError) as missing:
        await run(document, "q")
    assert (str(missing.value), missing.value.node) == ("missing required parameter 'y'", "q")
    with pytest.raises(QueryError, match="unknown parameter z; this query takes: x"):
        await run(document, "p", {"z": 1})


async def test_select_fields_all_none_mapping_and_a_missing_path():
    student_keys = keys(COUNTER, student=(ROSTER, "safe_user_id"))
    document = query(
        {"all": select(student_keys, "all"), "none": select(student_keys, "none"),
         "mapped": select(student_keys, {"count": "n"}), "missing": select(student_keys, {"count.deep": "n"})},
        {"all": "all", "none": "none", "mapped": "mapped", "missing": "missing"},
    )
    params = {"course_id": "alg"}
    assert [r["value"] for r in await run(document, "all", params)] == [{"count": 4}, {"count": 1}, {"count": 0}]
    assert [set(r) for r in await run(document, "none", params)] == [{"key", "provenance"}] * 3
    assert [r["n"] for r in await run(document, "mapped", params)] == [4, 1, 0]
    errors = await run(document, "missing", params)
    assert errors[0]["error"] == f"no 'count.deep' in the state of {COUNTER}"
    assert errors[0]["key"] == {"student": "ana"} and errors[0]["provenance"][0]["offset"] == 17


async def test_keys_pair_dimensions_element_by_element_and_skip_missing_values():
    documents = [{"student": "ana", "doc": "d1"}, {"student": "bo", "doc": "d2"}, {"student": "cy"}]
    document = query(
        {"words": select(keys(WORDS, student=(documents, "student"), doc_id=(documents, "doc")), {"words": "words"})},
        {"words": "words"},
    )
    tables = Tables(TABLES)
    rows = await run(document, "words", tables=tables)
    assert [(r["key"], r["words"]) for r in rows] == [
        ({"student": "ana", "doc_id": "d1"}, 120), ({"student": "bo", "doc_id": "d2"}, 7),
    ]  # cy has no document: no key
    assert tables.reads == [(WORDS, ['["ana","d1"]', '["bo","d2"]'])]  # one read for all keys

    uneven = query({"w": select(keys(WORDS, student=(["ana", "bo"], None), doc_id=(["d1"], None)))}, {"w": "w"})
    with pytest.raises(QueryError, match=r"lengths differ \(student: 2, doc_id: 1\)"):
        await run(uneven, "w")
    wrong_scope = query({"w": select(keys(WORDS, student=(["ana"], None)))}, {"w": "w"})
    with pytest.raises(QueryError, match="keyed by student, doc_id; the keys node gives student"):
        await run(wrong_scope, "w")


async def test_join_is_a_left_join_and_keeps_provenance():
    left = [{"id": "a", "x": 1, "provenance": [{"reducer": "r1"}]}, {"id": "b", "x": 2}, {"x": 3}]
    right = [{"ref": "a", "y": 10, "x": 99, "provenance": [{"reducer": "r2"}]}, {"ref": "z", "y": 0}]
    document = query({"j": join(left, right, "id", "ref")}, {"j": "j"})
    assert await run(document, "j") == [
        {"ref": "a", "y": 10, "x": 1, "id": "a", "provenance": [{"reducer": "r1"}, {"reducer": "r2"}]},
        {"id": "b", "x": 2},  # no match: kept as it was
        {"x": 3},  # no left_on value: kept as it was
    ]


async def test_map_applies_a_published_function_to_each_value():
    items = [{"n": 1}, {"n": 4}, {"m": 0}]
    document = query(
        {"m": map_values("test.double", items, "n", factor=10), "boom": map_values("test.explode", [1])},
        {"m": "m", "boom": "boom"},
    )
    assert await run(document, "m") == [10, 40, {"error": "no 'n' in this item", "item": {"m": 0}}]
    assert await run(document, "boom") == [{"error": "test.explode raised RuntimeError: boom", "item": 1}]


async def test_a_failing_call_names_its_node():
    document = query({"bad": call("test.explode", 1)}, {"bad": "bad"})
    with pytest.raises(QueryError) as raised:
        await run(document, "bad")
    assert (str(raised.value), raised.value.node) == ("test.explode raised RuntimeError: boom", "bad")


@pytest.mark.parametrize(
    ("document", "message", "node"),
    [
        ({"execution_dag": {"a": {"dispatch": "magic"}}}, "unknown node type 'magic'", "a"),
        ({"execution_dag": {"a": variable("nowhere")}}, "variable 'nowhere' names no node of the DAG", "a"),
        ({"execution_dag": {"a": call("os.system", "ls")}}, "function 'os.system' is not published", "a"),
        ({"execution_dag": {"a": select(keys("no.such", student=([], None)))}}, "no reducer 'no.such'", "a"),
        ({"execution_dag": {"a": {"dispatch": "join", "left": []}}}, "a join node needs left_on, right, right_on", "a"),
        ({"execution_dag": {"a": variable("b"), "b": join(variable("c"), [], "x", "y"), "c": variable("a")}},
         "the DAG has a cycle: a -> b -> c -> a", "a"),
        ({"execution_dag": {"a": parameter("x")}, "exports": {"e": {"returns": "zz"}}},
         "export 'e' must return a node of the DAG", "e"),
        ({"execution_dag": {"a": select([], "some")}}, 'fields must be "all", "none" or a mapping', "a"),
        ("not a query", '{"execution_dag"', None),
    ],
)
def test_invalid_queries_are_refused_naming_the_node(document, message, node):
    with pytest.raises(QueryError) as raised:
        validate(document, functions=published_functions(), reducers={r.id for r in REDUCERS})
    assert message in str(raised.value)
    assert raised.value.node == node
    assert raised.value.as_json() == {"error": str(raised.value), "node": node}


async def test_teachers_see_their_courses_and_students_only():
    document = course_query(COUNTER)
    rivera, chen = Caller("rivera", "teacher"), Caller("chen", "teacher")
    assert len(await run(document, "counter", {"course_id": "alg"}, caller=rivera)) == 3
    with pytest.raises(AccessDenied, match="rivera does not teach course 'bio'"):
        await run(document, "counter", {"course_id": "bio"}, caller=rivera)
    # A course the users file gives her counts like one the course record names her in.
    listed = Caller("chen", "teacher", frozenset({"alg"}))
    assert len(await run(document, "counter", {"course_id": "alg"}, caller=listed)) == 3
    # Keys chosen by hand are checked against her rosters too.
    direct = query({"c": select(keys(COUNTER, student=([parameter("who")], None)))}, {"c": "c"})
    with pytest.raises(AccessDenied, match="student 'ana' is on none of chen's rosters"):
        await run(direct, "c", {"who": "ana"}, caller=chen)
    assert (await run(direct, "c", {"who": "ana"}, caller=rivera))[0]["value"] == {"count": 4}


async def test_a_restricted_run_covers_only_the_changed_students():
    rows = await run(course_query(COUNTER), "counter", {"course_id": "alg"}, restrict_students={"bo"})
    assert [row["key"]["student"] for row in rows] == ["bo"]


def test_documents_combine_unless_names_collide():
    both = combine(course_query(COUNTER), course_query(WORDS, name="w"))
    assert set(both["exports"]) == {"counter", "w"}
    with pytest.raises(QueryError, match="named counter"):
        combine(course_query(COUNTER), course_query(COUNTER))


def test_a_function_name_is_published_once():
    registry = FunctionRegistry()
    registry.publish("x")(lambda: 1)
    with pytest.raises(QueryError, match="already published"):
        registry.publish("x")(lambda: 2)
