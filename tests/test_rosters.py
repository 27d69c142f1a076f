"""Rosters and courses load from Learning Observer's JSON or CSV into compacted topics, whole or not at all."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from lo_stream.connectors.exceptions import RosterFileError
from lo_stream.connectors.rosters import parse_courses, parse_roster
from lo_stream.tables.rosters import RosterTable
from lo_stream.topics import ensure_topics
from tests.support import lo_stream_command

LO_ROSTER = [
    {
        "user_id": "gc-1001",
        "profile": {
            "name": {"given_name": "Ana", "family_name": "Lima", "full_name": "Ana Lima"},
            "email_address": "ana@school.org",
            "photo_url": "https://example.org/ana.png",
        },
    },
    {"user_id": "gc-1002", "profile": {"name": {"given_name": "Bilal", "family_name": "Okafor"}}},
]


def test_learning_observer_roster_json(tmp_path):
    path = tmp_path / "roster.json"
    path.write_text(json.dumps(LO_ROSTER))
    assert parse_roster(path) == [
        {
            "user_id": "gc-1001", "safe_user_id": "gc-1001", "given_name": "Ana", "family_name": "Lima",
            "full_name": "Ana Lima", "email": "ana@school.org", "photo_url": "https://example.org/ana.png",
        },
        {
            "user_id": "gc-1002", "safe_user_id": "gc-1002", "given_name": "Bilal", "family_name": "Okafor",
            "full_name": "Bilal Okafor", "email": "", "photo_url": "",
        },
    ]


def test_learning_observer_roster_user_ids_are_keys_as_they_are(tmp_path):
    """LO's rosters list its test users by their key (encode_id("tc", "testcase-<id>")): not re-quoted."""
    path = tmp_path / "roster.json"
    path.write_text(json.dumps([{"user_id": "tc-testcase-Ana+Lima"}, {"user_id": "tc-testcase-bo%40x"}]))
    assert [s["safe_user_id"] for s in parse_roster(path)] == ["tc-testcase-Ana+Lima", "tc-testcase-bo%40x"]


def test_csv_roster_keys_students_like_the_gateway(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("user_id,given_name,family_name,email\nana lima,Ana,Lima,ana@school.org\n")
    [student] = parse_roster(path)
    assert student["safe_user_id"] == "ana+lima"  # what the gateway keys this user's events by
    assert student["full_name"] == "Ana Lima"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("r.csv", "user_id,given_name,email\nx,X,x@s\n", "line 1: the header lacks family_name"),
        ("r.csv", "user_id,given_name,family_name,email\nx,X,Y,x@s\n,Z,W,z@s\n", "line 3: user_id is empty"),
        ("r.csv", "user_id,given_name,family_name,email\nx,X,Y,\nx,X,Y,\n", "student 'x' is listed twice"),
        ("r.json", '[{"user_id": "a"}, {"user_id": "b", "profile": {"name": {"given_name": 7}}}]',
         "student 2: profile.name.given_name must be a string, not int"),
        ("r.json", '[{"profile": {}}]', "student 1: user_id is missing"),
        ("r.json", '{"user_id": "a"}', "expected a JSON list of students"),
        ("r.json", '[{"user_id": "a"},\n oops]', "line 2: not valid JSON"),
    ],
)
def test_malformed_roster_is_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RosterFileError) as raised:
        parse_roster(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_courses_csv_and_json(tmp_path):
    csv_path = tmp_path / "courses.csv"
    csv_path.write_text("id,name,teacher\nalg-1,Algebra 1,ms.rivera@school.org;mr.chen@school.org\n")
    assert parse_courses(csv_path) == [
        {"course_id": "alg-1", "name": "Algebra 1", "teachers": ["ms.rivera@school.org", "mr.chen@school.org"]}
    ]
    json_path = tmp_path / "courses.json"
    json_path.write_text(json.dumps([{"id": "bio", "name": "Biology", "teacher": "dr.okoye"}]))
    assert parse_courses(json_path) == [{"course_id": "bio", "name": "Biology", "teachers": ["dr.okoye"]}]
    json_path.write_text(json.dumps([{"id": "bio", "name": "Biology"}, {"id": "bio", "name": "Again"}]))
    with pytest.raises(RosterFileError, match="course 'bio' is listed twice"):
        parse_courses(json_path)


async def until(condition, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the roster table did not catch up"
        await asyncio.sleep(0.1)


@pytest.mark.kafka
async def test_load_reload_and_refuse_a_roster_seen_live_by_the_roster_table(settings, tmp_path):
    env = {**os.environ, **settings.as_env()}
    await ensure_topics(settings)
    async with RosterTable(settings) as table:
        changed: list[str] = []
        table.listeners.append(changed.append)
        assert table.course_ids() == []

        first = tmp_path / "roster.json"
        first.write_text(json.dumps(LO_ROSTER))
        loaded = lo_stream_command("rosters", "load", str(first), "--course", "alg-1", env=env)
        assert loaded.returncode == 0, loaded.stderr
        assert "course alg-1: 2 students" in loaded.stdout
        await until(lambda: table.students("alg-1") is not None)
        assert [s["user_id"] for s in table.students("alg-1")] == ["gc-1001", "gc-1002"]

        # Reloading replaces the course's roster: a student who left is gone.
        second = tmp_path / "roster.csv"
        second.write_text("user_id,given_name,family_name,email\ngc-1002,Bilal,Okafor,\ngc-1003,Chen,Wu,\n")
        assert lo_stream_command("rosters", "load", str(second), "--course", "alg-1", env=env).returncode == 0
        await until(lambda: len(changed) == 2)
        assert [s["user_id"] for s in table.students("alg-1")] == ["gc-1002", "gc-1003"]

        # A malformed file is refused whole: nothing is written.
        broken = tmp_path / "broken.csv"
        broken.write_text("user_id,given_name,family_name,email\ngc-1004,Dara,Kim,\n,Elif,Haddad,\n")
        refused = lo_stream_command("rosters", "load", str(broken), "--course", "alg-1", env=env)
        assert refused.returncode != 0
        assert f"{broken}, line 3: user_id is empty (nothing was loaded)" in refused.stderr

        courses = tmp_path / "courses.csv"
        courses.write_text("id,name,teacher\nalg-1,Algebra 1,ms.rivera\nbio,Biology,dr.okoye\n")
        assert lo_stream_command("rosters", "courses", str(courses), env=env).returncode == 0
        await until(lambda: "bio" in table.courses)
        assert table.courses["bio"] == {"course_id": "bio", "name": "Biology", "teachers": ["dr.okoye"]}
        assert table.courses_taught_by("ms.rivera") == ["alg-1"]
        assert changed == ["alg-1", "alg-1", "alg-1", "bio"]  # the broken file changed nothing

    # A table started now reads the same state from the topics.
    async with RosterTable(settings) as fresh:
        assert fresh.rosters == table.rosters and fresh.courses == table.courses
    listing = lo_stream_command("rosters", "list", env=env).stdout.splitlines()
    assert listing == [
        "alg-1  Algebra 1  teachers: ms.rivera  students: 2",
        "bio  Biology  teachers: dr.okoye  students: (no roster)",
    ]
