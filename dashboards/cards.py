"""What a teacher reads about each student, as HTML: the student cards of the course overview,
the class strip above them, and the order "needs attention" puts them in.

Pure functions of one row of ``writing.course_overview`` (and the time now), so that every page
and test says the same thing about a student. Colour is never the only signal: every status is
also written out, and the palette keeps WCAG AA contrast (4.5:1 for text) on white.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlencode

from lo_stream.query.functions import initials

__all__ = [
    "CSS",
    "SPARK_MINUTES",
    "WRITING_NOW_MS",
    "Status",
    "attention_order",
    "card_html",
    "class_activity",
    "class_strip_html",
    "document_title",
    "sparkline_svg",
    "status_of",
]

WRITING_NOW_MS = 120_000
"""A student whose latest event is younger than this is writing now; older, idle."""
SPARK_MINUTES = 10
"""A card's sparkline shows this many minutes, up to now."""

# Text colours with at least 4.5:1 contrast on white and on their badge backgrounds.
CSS = """
:host { --lo-ink: #1f2328; --lo-muted: #57606a; --lo-line: #d0d7de; --lo-accent: #0b5cad; }
.lo-card { border: 1px solid var(--lo-line); border-radius: 8px; padding: 10px 12px; width: 230px;
  background: #fff; color: var(--lo-ink); font-size: 14px; line-height: 1.35; box-sizing: border-box; }
.lo-card h3 { margin: 0 0 4px 0; font-size: 15px; display: flex; align-items: center; gap: 8px; }
.lo-card a { color: var(--lo-accent); text-decoration: none; }
.lo-card a:hover, .lo-card a:focus { text-decoration: underline; }
.lo-tag { display: inline-flex; align-items: center; justify-content: center; width: 30px; height: 30px;
  border-radius: 50%; font-size: 12px; font-weight: 600; color: #fff; flex: none; }
.lo-status { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 8px; border-radius: 10px; }
.lo-writing { background: #dafbe1; color: #116329; }
.lo-idle { background: #fff1c2; color: #7a4d00; }
.lo-not-started { background: #eaeef2; color: #424a53; }
.lo-doc { color: var(--lo-muted); margin: 4px 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.lo-words { display: flex; align-items: center; gap: 6px; }
.lo-bar { flex: 1; height: 8px; background: #eaeef2; border-radius: 4px; position: relative; overflow: hidden; }
.lo-bar span { position: absolute; left: 0; top: 0; bottom: 0; background: #0b5cad; border-radius: 4px; }
.lo-bar i { position: absolute; top: -2px; bottom: -2px; width: 2px; background: #1f2328; }
.lo-meta { color: var(--lo-muted); font-size: 12px; }
.lo-strip { display: flex; flex-wrap: wrap; gap: 12px; color: var(--lo-ink); font-size: 14px; }
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


def sparkline_svg(minutes: Any, now_ms: float, width: int = 120, height: int = 24) -> str:
    """Events per minute over the last `SPARK_MINUTES` minutes, as bars, with a text alternative.

    >>> 'aria-label="Activity in the last 10 minutes: 7 events"' in sparkline_svg({"60000": 7}, 120_000)
    True
    """
    counts = minutes if isinstance(minutes, dict) else {}
    this_minute = int(now_ms // 60_000 * 60_000)
    series = [counts.get(str(this_minute - 60_000 * back), 0) for back in range(SPARK_MINUTES - 1, -1, -1)]
    total, peak = sum(series), max(series) or 1
    step = width / SPARK_MINUTES
    bars = "".join(
        f'<rect x="{i * step + 1:.1f}" y="{height - max(value / peak * height, 1 if value else 0):.1f}" '
        f'width="{step - 2:.1f}" height="{max(value / peak * height, 1 if value else 0):.1f}" fill="#0b5cad"/>'
        for i, value in enumerate(series)
    )
    label = f"Activity in the last {SPARK_MINUTES} minutes: {total} event{'s' if total != 1 else ''}"
    return (f'<svg role="img" aria-label="{label}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<title>{label}</title><line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" '
            f'stroke="#d0d7de"/>{bars}</svg>')


def card_html(row: dict, course_id: str, now_ms: float, median_words: float) -> str:
    """One student's card: name tag, name (a link to their page), status in words, the current
    document's title, words against the class median, time on task, and recent activity."""
    student = row["key"]["student"]
    name = row.get("full_name") or student
    status = status_of(row, now_ms)
    words = row.get("words") or 0
    scale = max(words, median_words, 1) * 1.25
    colour = TAG_COLOURS[sum(map(ord, student)) % len(TAG_COLOURS)]
    photo = row.get("photo_url")
    tag = (f'<img class="lo-tag" src="{html.escape(photo)}" alt="">' if photo else
           f'<span class="lo-tag" style="background:{colour}" aria-hidden="true">{html.escape(initials(name))}</span>')
    link = "student?" + urlencode({"course": course_id, "student": student})
    document = document_title(row.get("documents"), row.get("last_document"))
    median_note = f"class median {median_words:g}"
    return (
        f'<article class="lo-card lo-card-{status.kind}" aria-label="{html.escape(name)}" data-student="{html.escape(student)}">'
        f'<h3>{tag}<a href="{html.escape(link)}">{html.escape(name)}</a></h3>'
        f'<span class="lo-status lo-{status.kind}">{status.text}</span>'
        f'<p class="lo-doc" title="{html.escape(document)}">{html.escape(document) if document else "No document yet"}</p>'
        f'<div class="lo-words"><span>{words} word{"s" if words != 1 else ""}</span>'
        f'<span class="lo-bar" role="img" aria-label="{words} words; {median_note}">'
        f'<span style="width:{min(words / scale, 1) * 100:.0f}%"></span>'
        f'<i style="left:{min(median_words / scale, 1) * 100:.0f}%"></i></span></div>'
        f'<p class="lo-meta">{_minutes(row.get("total_time_on_task_ms"))} on task</p>'
        f'{sparkline_svg(row.get("activity"), now_ms)}'
        f'</article>'
    )


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
