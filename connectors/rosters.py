"""Rosters and courses: which students are in a course, and which teachers see it.

Responsibilities:

1. read a roster file, Learning Observer's JSON (a list of ``{"user_id", "profile": {"name":
   {"given_name", "family_name", "full_name"}, "email_address", "photo_url"}}``) or CSV
   (``user_id,given_name,family_name,email[,photo_url]``), and a courses file (CSV
   ``id,name,teacher``, teachers separated by ``;``, or a JSON list of such objects);
2. check all of it first: a malformed file is refused whole, naming line and field;
3. write one record per course, keyed by course id, to the compacted rosters (or courses) topic:
   a reload replaces the course's roster in one write, never half of it;

The workers and the query layer read them back as a table: `lo_stream.tables.rosters.RosterTable`.

A roster record::

    {"course_id": "algebra-1", "students": [{"user_id": "ana@school.org",
     "safe_user_id": "ana@school.org", "given_name": "Ana", "family_name": "Lima",
     "full_name": "Ana Lima", "email": "ana@school.org", "photo_url": ""}]}

``safe_user_id`` is the key of the student's reducer tables (see `lo_stream.envelopes`). In
Learning Observer's JSON, ``user_id`` *is* that key (LO's rosters list ``gc-<Google id>`` or, for
its test users, ``tc-testcase-<id>``), so it is kept as it is; a CSV's ``user_id`` is the id a
student signs in with, keyed the way the gateway keys a token's user (`safe_user_id`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from lo_stream.connectors.exceptions import RosterFileError
from lo_stream.connectors.producer import EventProducer
from lo_stream.envelopes import safe_user_id
from lo_stream.settings import Settings

__all__ = [
    "load_courses",
    "load_roster",
    "parse_courses",
    "parse_roster",
    "roster_student",
    "write_course",
]

ROSTER_CSV_COLUMNS = ("user_id", "given_name", "family_name", "email")
COURSES_CSV_COLUMNS = ("id", "name", "teacher")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterFileError(f"cannot read {path}: {exc}") from None


def _is_json(path: Path, text: str) -> bool:
    return path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{"))


def _csv_rows(path: Path, text: str, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, row) of a CSV file with a header naming at least the `required` columns."""
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in required if name not in header]
    if missing:
        raise RosterFileError(
            f"{path}, line 1: the header lacks {', '.join(missing)} (expected {','.join(required)})"
        )
    reader.fieldnames = header
    return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]


def _json_objects(path: Path, text: str, what: str) -> list[tuple[str, dict]]:
    """(where, object) of each item of a JSON list file; `what` names the items ("student")."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RosterFileError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(document, list):
        raise RosterFileError(f"{path}: expected a JSON list of {what}s, found a JSON {type(document).__name__}")
    items = []
    for position, item in enumerate(document):
        where = f"{path}, {what} {position + 1}"
        if not isinstance(item, dict):
            raise RosterFileError(f"{where}: expected an object, found {type(item).__name__}")
        items.append((where, item))
    return items


def _field(item: Any, dotted: str, where: str, *, required: bool) -> str:
    value: Any = item
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        if required:
            raise RosterFileError(f"{where}: {dotted} is missing")
        return ""
    if not isinstance(value, str):
        raise RosterFileError(f"{where}: {dotted} must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise RosterFileError(f"{where}: {dotted} is empty")
    return value.strip()


def roster_student(
    user_id: str, given: str, family: str, full: str = "", email: str = "", photo: str = "", *, key: str | None = None
) -> dict:
    """One student of a roster record; `key` is their events' key (`safe_user_id(user_id)` if not given)."""
    return {
        "user_id": user_id,
        "safe_user_id": safe_user_id(user_id) if key is None else key,
        "given_name": given,
        "family_name": family,
        "full_name": full or " ".join(part for part in (given, family) if part) or user_id,
        "email": email,
        "photo_url": photo,
    }


def parse_roster(path: Path) -> list[dict]:
    """The students of a roster file, checked; `RosterFileError` names the first problem."""
    text = _text(path)
    students: list[dict] = []
    if _is_json(path, text):
        for where, item in _json_objects(path, text, "student"):
            user_id = _field(item, "user_id", where, required=True)
            students.append(
                roster_student(
                    user_id,
                    _field(item, "profile.name.given_name", where, required=False),
                    _field(item, "profile.name.family_name", where, required=False),
                    _field(item, "profile.name.full_name", where, required=False),
                    _field(item, "profile.email_address", where, required=False),
                    _field(item, "profile.photo_url", where, required=False),
                    key=user_id,  # LO's user_id is the events' key already
                )
            )
    else:
        for line, row in _csv_rows(path, text, ROSTER_CSV_COLUMNS):
            if not row.get("user_id"):
                raise RosterFileError(f"{path}, line {line}: user_id is empty")
            students.append(
                roster_student(
                    row["user_id"], row["given_name"], row["family_name"], row.get("full_name", ""),
                    row["email"], row.get("photo_url", ""),
                )
            )
    seen: set[str] = set()
    for student in students:
        if student["safe_user_id"] in seen:
            raise RosterFileError(f"{path}: student {student['user_id']!r} is listed twice")
        seen.add(student["safe_user_id"])
    return students


def parse_courses(path: Path) -> list[dict]:
    """The courses of a courses file: ``{"course_id", "name", "teachers": [...]}`` each."""
    text = _text(path)
    courses: list[dict] = []
    if _is_json(path, text):
        for where, item in _json_objects(path, text, "course"):
            teachers = item.get("teachers", [item["teacher"]] if "teacher" in item else [])
            if not isinstance(teachers, list) or not all(isinstance(t, str) and t.strip() for t in teachers):
                raise RosterFileError(f"{where}: teacher(s) must be non-empty strings")
            courses.append(
                {
                    "course_id": _field(item, "id", where, required=True),
                    "name": _field(item, "name", where, required=True),
                    "teachers": [t.strip() for t in teachers],
                }
            )
    else:
        for line, row in _csv_rows(path, text, COURSES_CSV_COLUMNS):
            for column in ("id", "name"):
                if not row.get(column):
                    raise RosterFileError(f"{path}, line {line}: {column} is empty")
            teachers = [t.strip() for t in row["teacher"].split(";") if t.strip()]
            courses.append({"course_id": row["id"], "name": row["name"], "teachers": teachers})
    ids = [course["course_id"] for course in courses]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RosterFileError(f"{path}: course {duplicates[0]!r} is listed twice")
    return courses


async def load_roster(settings: Settings, path: Path, course_id: str) -> dict:
    """Check `path` and make it the roster of `course_id` (replacing any earlier one)."""
    if not course_id.strip():
        raise RosterFileError("a roster needs a course id (--course)")
    record = {"course_id": course_id, "students": parse_roster(path)}
    async with EventProducer(settings) as producer:
        await producer.send_record(settings.topics.rosters, course_id, record)
    return record


async def write_course(settings: Settings, course: dict, students: list[dict]) -> None:
    """Write a course record (``course_id``, ``name``, ``teachers``) and its roster."""
    async with EventProducer(settings) as producer:
        await producer.send_record(settings.topics.courses, course["course_id"], course)
        await producer.send_record(
            settings.topics.rosters, course["course_id"], {"course_id": course["course_id"], "students": students}
        )


async def load_courses(settings: Settings, path: Path) -> list[dict]:
    """Check `path` and write each of its courses (name, teachers)."""
    courses = parse_courses(path)
    async with EventProducer(settings) as producer:
        for course in courses:
            await producer.send_record(settings.topics.courses, course["course_id"], course)
    return courses
