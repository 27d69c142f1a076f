"""What a teacher reads about each student: the fields of the student cards of the course
overview, the class strip above them (HTML), and the order "needs attention" puts them in.

Pure functions of one row of ``writing.course_overview`` (and the time now), so that every page
and test says the same thing about a student. Colour is never the only signal: every status is
also written out, and the palette keeps WCAG AA contrast (4.5:1 for text) on white.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlencode

from lo_stream.query.functions import initials

__all__ = [
    "CSS",
    "SPARK_MINUTES",
    "TAG_COLOURS",
    "WRITING_NOW_MS",
    "Status",
    "attention_order",
    "card_fields",
    "class_activity",
    "class_strip_html",
    "document_title",
    "median_words",
    "spark",
    "status_of",
]

WRITING_NOW_MS = 120_000
"""A student whose latest event is younger than this is writing now; older, idle."""
SPARK_MINUTES = 10
"""A card's sparkline shows this many minutes, up to now."""

# Text colours with at least 4.5:1 contrast on white and on their badge backgrounds.
CSS = """
:host { --lo-ink: #1f2328; --lo-line: #d0d7de; }
.lo-strip { display: flex; flex-wrap: wrap; gap: 12px; color: var(--lo-ink); font-size: 14px;
  font-family: system-ui, "Segoe UI", sans-serif; }
.lo-strip div { border: 1px solid var(--lo-line); border-radius: 8px; padding: 6px 12px; background: #fff; }
.lo-strip strong { display: block; font-size: 22px; }
"""

# Name-tag backgrounds, each with white text at 4.5:1 or more.
TAG_COLOURS = ("#0b5cad", "#8a3ffc", "#b3261e", "#116329", "#7a4d00", "#005f73", "#6e3e9e", "#9b2c5f")


@dataclass(frozen=True)
class Status:
    """A student's status: ``kind`` (writing, idle, not-started), the words for it, and for how
    long the student has been idle (ms; None when writing or not started)."""

    kind: str
    text: str
    idle_ms: float | None


def status_of(row: dict, now_ms: float) -> Status:
    """Writing now, idle for a while, or not started.

    >>> status_of({"events": 0}, 0).text, status_of({"events": 3, "last_active": 0}, 30_000).text
    ('Not started', 'Writing now')
    >>> status_of({"events": 3, "last_active": 0}, 7 * 60_000).text
    'Idle 7 min'
    """
    last = row.get("last_active")
    if not row.get("events") or not isinstance(last, (int, float)):
        return Status("not-started", "Not started", None)
    idle = max(now_ms - last, 0)
    if idle < WRITING_NOW_MS:
        return Status("writing", "Writing now", None)
    minutes = int(idle // 60_000)
    return Status("idle", f"Idle {minutes} min" if minutes < 120 else f"Idle {minutes // 60} h", idle)


def document_title(documents: Any, doc_id: Any) -> str:
    """A document's title where its events gave one, else its id.

    >>> document_title({"d1": {"title": "My essay"}}, "d1"), document_title({}, "d2"), document_title(None, None)
    ('My essay', 'd2', '')
    """
    if not isinstance(doc_id, str):
        return ""
    entry = documents.get(doc_id) if isinstance(documents, dict) else None
    title = entry.get("title") if isinstance(entry, dict) else None
    return title if isinstance(title, str) and title.strip() else doc_id


def attention_order(rows: Iterable[dict], now_ms: float) -> list[dict]:
    """Who needs the teacher first: idle students (the longest idle first), then those who have not
    started (who may be absent rather than stuck), then those writing, fewest words first.

    >>> rows = [{"full_name": "W", "events": 5, "last_active": 990_000, "words": 40},
    ...         {"full_name": "N", "events": 0}, {"full_name": "I", "events": 5, "last_active": 0, "words": 90}]
    >>> [row["full_name"] for row in attention_order(rows, 1_000_000)]
    ['I', 'N', 'W']
    """
    def key(row: dict) -> tuple:
        status = status_of(row, now_ms)
        rank = {"idle": 0, "not-started": 1, "writing": 2}[status.kind]
        return rank, -(status.idle_ms or 0), row.get("words") or 0, _name(row)

    return sorted(rows, key=key)


def _name(row: dict) -> str:
    return row.get("full_name") or (row.get("key") or {}).get("student", "")


def _minutes(milliseconds: Any) -> str:
    minutes = (milliseconds or 0) / 60_000
    return f"{minutes:.0f} min" if minutes >= 10 else f"{minutes:.1f} min"


def spark(minutes: Any, now_ms: float) -> list[int]:
    """Events per minute over the last `SPARK_MINUTES` minutes, oldest first.

    >>> spark({"60000": 7, "0": 1}, 120_000)[-3:]
    [1, 7, 0]
    """
    counts = minutes if isinstance(minutes, dict) else {}
    this_minute = int(now_ms // 60_000 * 60_000)
    return [counts.get(str(this_minute - 60_000 * back), 0) for back in range(SPARK_MINUTES - 1, -1, -1)]


def card_fields(row: dict, course_id: str, now_ms: float, median: float) -> dict:
    """What one student's card shows (`lo_stream.dashboards.widgets.CardGrid` draws it): name tag,
    name with a link to their page, status in words, the current document's title, words against
    the class median, time on task, and activity per minute over the last 10 minutes.

    >>> fields = card_fields({"key": {"student": "s1"}, "full_name": "Ana Lima", "events": 3, "words": 40,
    ...                       "last_active": 0, "activity": {"0": 3}}, "alg-1", 30_000, 80)
    >>> fields["status_text"], fields["words_text"], fields["bar_label"], fields["spark_label"]
    ('Writing now', '40 words', '40 words; class median 80', 'Activity in the last 10 minutes: 3 events')
    """
    student = row["key"]["student"]
    name = row.get("full_name") or student
    status = status_of(row, now_ms)
    words = row.get("words") or 0
    scale = max(words, median, 1) * 1.25
    series = spark(row.get("activity"), now_ms)
    total = sum(series)
    document = document_title(row.get("documents"), row.get("last_document"))
    return {
        "name": name,
        "href": "student?" + urlencode({"course": course_id, "student": student}),
        "initials": initials(name),
        "colour": TAG_COLOURS[sum(map(ord, student)) % len(TAG_COLOURS)],
        "photo": row.get("photo_url") or "",
        "status": status.kind,
        "status_text": status.text,
        "document": document or "No document yet",
        "words_text": f"{words} word{'s' if words != 1 else ''}",
        "fill": round(min(words / scale, 1) * 100),
        "median": round(min(median / scale, 1) * 100),
        "bar_label": f"{words} words; class median {median:g}",
        "on_task": f"{_minutes(row.get('total_time_on_task_ms'))} on task",
        "spark": series,
        "spark_label": f"Activity in the last {SPARK_MINUTES} minutes: {total} event{'s' if total != 1 else ''}",
        "events": row.get("events") or 0,
    }


def median_words(rows: Iterable[dict]) -> float:
    """The median words of the students who have started (0 when nobody has)."""
    started = [row.get("words") or 0 for row in rows if row.get("events")]
    return statistics.median(started) if started else 0


def class_strip_html(rows: list[dict], now_ms: float) -> str:
    """How many are writing now, idle and not started, and the median words, in words and numbers."""
    kinds = [status_of(row, now_ms).kind for row in rows]
    boxes = [
        ("Writing now", kinds.count("writing")), ("Idle", kinds.count("idle")),
        ("Not started", kinds.count("not-started")), ("Median words", f"{median_words(rows):g}"),
    ]
    return '<div class="lo-strip" role="group" aria-label="The class now">' + "".join(
        f"<div><strong>{value}</strong>{label}</div>" for label, value in boxes) + "</div>"


def class_activity(rows: Iterable[dict], now_ms: float, minutes: int = 60) -> tuple[list[int], list[int]]:
    """Events per minute across the class over the last `minutes` minutes: (minutes ago, counts).

    >>> class_activity([{"activity": {"0": 2}}, {"activity": {"0": 1, "60000": 4}}], 60_000, minutes=2)
    ([-1, 0], [3, 4])
    """
    this_minute = int(now_ms // 60_000 * 60_000)
    totals = [0] * minutes
    for row in rows:
        for start, count in (row.get("activity") or {}).items():
            back = (this_minute - int(start)) // 60_000
            if 0 <= back < minutes:
                totals[minutes - 1 - back] += count
    return list(range(-(minutes - 1), 1)), totals
