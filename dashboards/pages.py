"""The teacher's pages: course overview, student detail, class view.

Every page is built per browser session for the signed-in user (``pn.state.user``) and reads
through the query layer on that user's behalf, so a teacher only ever sees their own courses.
A session takes live data from `dashboards.live` with a plain callback and gives it back when
the session ends (Panel keeps watchers on shared objects otherwise).
"""

from __future__ import annotations

import datetime
import html
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
from bokeh.models.widgets.tables import HTMLTemplateFormatter, NumberFormatter

from lo_stream.query.client import BackendError, QueryClient
from lo_stream.dashboards.live import LiveCourse, LiveCourses
from lo_stream.query.functions import initials

__all__ = ["COLUMNS", "DashboardContext", "class_page", "overview_page", "overview_row", "student_page"]

IDLE_AFTER_MS = 120_000  # no event for two minutes: idle
REFRESH_SECONDS = 5

COLUMNS = ["who", "name", "events", "typing_ms", "time_on_task_min", "words", "last_active", "status", "document"]
TITLES = {
    "who": "", "name": "Student", "events": "Events", "typing_ms": "Typing (ms between keys)",
    "time_on_task_min": "Time on task (min)", "words": "Words", "last_active": "Last active",
    "status": "Status", "document": "Document",
}


@dataclass
class DashboardContext:
    """What a page (also a module's page) gets: the query client, the live courses, the user."""

    client: QueryClient
    live: LiveCourses

    @property
    def user(self) -> str | None:
        return pn.state.user

    def query_param(self, name: str) -> str | None:
        value = pn.state.session_args.get(name)
        return value[0].decode() if value else None


def _message(text: str, kind: str = "info") -> pn.pane.Alert:
    return pn.pane.Alert(text, alert_type=kind, sizing_mode="stretch_width")


def _time(milliseconds: Any) -> str:
    if not isinstance(milliseconds, (int, float)):
        return ""
    return datetime.datetime.fromtimestamp(milliseconds / 1000).strftime("%H:%M:%S")


def overview_row(row: dict, course_id: str, now_ms: float) -> dict:
    """One table row of the course overview from one row of writing.course_overview."""
    student = row["key"]["student"]
    name = row.get("full_name") or student
    last = row.get("last_active")
    if not row.get("events"):
        status = "no events yet"
    else:
        status = "active" if isinstance(last, (int, float)) and now_ms - last < IDLE_AFTER_MS else "idle"
    photo = row.get("photo_url")
    badge = (f'<img src="{html.escape(photo)}" width="28" height="28" style="border-radius:14px">' if photo
             else f'<span class="lo-initials">{html.escape(initials(name))}</span>')
    link = f"student?course={course_id}&student={student}"
    return {
        "who": f'<a href="{html.escape(link)}">{badge}</a>',
        "name": name,
        "events": row.get("events", 0),
        "typing_ms": row.get("typing_median_ms"),
        "time_on_task_min": round((row.get("time_on_task_ms") or 0) / 60000, 1),
        "words": row.get("words", 0),
        "last_active": _time(last),
        "status": status,
        "document": document_title(row.get("documents"), row.get("last_document")),
    }


def document_text(written: dict, tabs: dict) -> str:
    """A document's text for the student page (Markdown, escaped): the body, then each tab under
    its title; a note where the document had text from before logging, which is not shown.

    >>> print(document_text({"text": "Hi", "unseen_runs": [[0, 40]], "tabs": {"t.1": {"text": "n"}}},
    ...                     {"t.1": {"title": "Notes"}}))
    Hi
    <BLANKLINE>
    **Notes**
    <BLANKLINE>
    n
    <BLANKLINE>
    *40 characters written before lo_stream saw this document are not shown.*
    """
    parts = [html.escape(written.get("text") or "") or "*(empty)*"]
    for tab_id, tab in (written.get("tabs") or {}).items():
        title = (tabs.get(tab_id) or {}).get("title") or tab_id
        parts.append(f"**{html.escape(str(title))}**\n\n{html.escape(tab.get('text') or '') or '*(empty)*'}")
    unseen = sum(length for _, length in written.get("unseen_runs") or [])
    if unseen:
        parts.append(f"*{unseen} characters written before lo_stream saw this document are not shown.*")
    return "\n\n".join(parts)


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


def _frame(course: LiveCourse) -> pd.DataFrame:
    now = time.time() * 1000
    rows = [overview_row(row, course.course_id, now) for row in course.rows.values()]
    return pd.DataFrame(rows, index=list(course.rows), columns=COLUMNS)


class _Session:
    """What one browser session holds, released when it ends."""

    def __init__(self) -> None:
        self.doc = pn.state.curdoc
        self.releases: list[Callable[[], None]] = []
        pn.state.on_session_destroyed(lambda _context: self.release())

    def hold(self, release: Callable[[], None]) -> None:
        self.releases.append(release)

    def release(self) -> None:
        while self.releases:
            self.releases.pop()()

    def soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` in this session's thread of control (live updates arrive from outside it)."""
        if self.doc is not None and self.doc.session_context is not None:
            self.doc.add_next_tick_callback(callback)


async def _courses(context: DashboardContext, user: str, body: pn.Column) -> list[dict] | None:
    try:
        return await context.client.courses(user)
    except BackendError as exc:
        body[:] = [_message(f"The query layer cannot be reached ({exc}). Retrying ...", "danger")]
        return None


def overview_page(context: DashboardContext) -> pn.viewable.Viewable:
    """Pick a course; one row per roster student, updated live, sortable and filterable."""
    session = _Session()
    # Read now: asynchronous callbacks do not run in the session's context.
    user, wanted = context.user, context.query_param("course")
    picker = pn.widgets.Select(name="Course", options={}, sizing_mode="fixed", width=320)
    notice = pn.Column(sizing_mode="stretch_width")
    table = pn.widgets.Tabulator(
        pd.DataFrame(columns=COLUMNS), show_index=False, disabled=True, header_filters=True, pagination=None,
        titles=TITLES, sizing_mode="stretch_width",
        formatters={"who": HTMLTemplateFormatter(template="<%= value %>"), "typing_ms": NumberFormatter(format="0")},
        height=520, name="students",
    )
    body = pn.Column(notice, sizing_mode="stretch_width")

    def show_table(shown: bool) -> None:
        # Added to the page when there is something to show, rather than hidden and shown:
        # Tabulator draws no rows when it was laid out while hidden (until something redraws it).
        if shown != (table in body.objects):
            body[:] = [notice, table] if shown else [notice]
    state: dict[str, Any] = {"course": None, "positions": {}}

    def show_course(course: LiveCourse) -> None:
        if course is not state["course"]:
            return
        notice[:] = []
        if course.problem:
            notice.append(_message(course.problem, "warning" if course.loaded else "danger"))
        if not course.loaded:
            show_table(False)
            return
        frame = _frame(course)
        state["positions"] = {student: position for position, student in enumerate(frame.index)}
        table.value = frame
        show_table(True)
        if frame.empty:
            notice.append(_message(f"Course {course.course_id} has no students on its roster yet "
                                   "(load one: lo-stream rosters load FILE --course ID).", "info"))
        elif not frame["events"].any():
            notice.append(_message("No events yet for this course: the table fills in as students work.", "info"))

    def patch(course: LiveCourse, students: set[str] | None) -> None:
        if course is not state["course"]:
            return
        positions = state["positions"]
        if students is None or not course.loaded or any(s not in positions for s in students) or course.problem:
            show_course(course)
            return
        now = time.time() * 1000
        changes: dict[str, list] = {}
        for student in students:
            row = overview_row(course.rows[student], course.course_id, now)
            for column, value in row.items():
                changes.setdefault(column, []).append((positions[student], value))
        table.patch(changes, as_index=False)
        if notice.objects:
            notice[:] = []  # e.g. "no events yet" no longer holds

    def refresh_status() -> None:
        course = state["course"]
        if course is not None and course.loaded and not table.value.empty:
            now = time.time() * 1000
            statuses = [overview_row(course.rows[s], course.course_id, now)["status"] for s in table.value.index
                        if s in course.rows]
            changed = [(i, s) for i, s in enumerate(statuses) if table.value["status"].iloc[i] != s]
            if changed:
                table.patch({"status": changed}, as_index=False)

    def open_course(course_id: str | None) -> None:
        session.release()
        state["course"] = None
        if not course_id:
            show_table(False)
            return
        course = context.live.acquire(course_id)
        state["course"] = course
        unwatch = course.watch(lambda students: session.soon(partial(patch, course, students)))
        session.hold(lambda: (unwatch(), context.live.release(course_id)))
        pn.state.location.update_query(course=course_id)
        show_course(course)

    picker.param.watch(lambda event: open_course(event.new), "value")

    async def load() -> None:
        courses = await _courses(context, user, notice)
        if courses is None:
            pn.state.add_periodic_callback(load, period=3000, count=1)
            return
        if not courses:
            notice[:] = [_message("You have no courses yet. An admin loads them with lo-stream rosters courses.")]
            return
        options = {f"{c['name']} ({c['course_id']})": c["course_id"] for c in courses}
        if wanted and wanted not in options.values():
            # A placeholder first: a Select picks its first option, which would open a course.
            picker.options = {"(choose one of your courses)": None, **options}
            notice[:] = [_message(f"You cannot open course {wanted!r}: it is not one of your courses.", "danger")]
            return
        picker.options = options
        chosen = wanted or courses[0]["course_id"]
        if picker.value == chosen:
            open_course(chosen)
        else:
            picker.value = chosen

    pn.state.onload(load)
    pn.state.add_periodic_callback(refresh_status, period=15_000)
    return pn.Column(
        pn.pane.Markdown(f"## Course overview\nSigned in as **{user}** · [log out](logout)"),
        picker, body, sizing_mode="stretch_width",
    )


def _activity_plot(bins: dict[str, float]) -> hv.Bars:
    data = sorted((datetime.datetime.fromtimestamp(int(start) / 1000).strftime("%H:%M"), ms / 60000)
                  for start, ms in bins.items())
    return hv.Bars(data, "window", "minutes").opts(title="Time on task per 10 minutes", responsive=True, height=260)


def _typing_plot(timestamps: list[float]) -> hv.Curve:
    intervals = [(i + 1, later - earlier) for i, (earlier, later) in enumerate(zip(timestamps, timestamps[1:]))]
    return hv.Curve(intervals, "edit", "ms since previous").opts(
        title="Intervals between the last edits", responsive=True, height=260
    )


def student_page(context: DashboardContext) -> pn.viewable.Viewable:
    """A student's current document, typing and activity over time, and their documents."""
    student, course_id, user = context.query_param("student"), context.query_param("course"), context.user
    header = pn.pane.Markdown(f"## {student or 'Student'}", sizing_mode="stretch_width")
    notice = pn.Column(sizing_mode="stretch_width")
    documents = pn.widgets.Select(name="Document", options=[], width=320)
    text = pn.pane.Markdown("", sizing_mode="stretch_width", name="text",
                            styles={"white-space": "pre-wrap", "border": "1px solid #ddd", "padding": "8px"})
    counts = pn.pane.Markdown("")
    plots = pn.Row(sizing_mode="stretch_width")

    async def refresh() -> None:
        if not student:
            notice[:] = [_message("Open a student from the course overview.")]
            return
        try:
            docs = (await context.client.run("writing.student_documents", {"student": student}, user))[0]["value"]
            typing = (await context.client.run("writing.student_typing", {"student": student}, user))[0]["value"]
            names: dict[str, str] = {}
            for doc_id in sorted(docs["documents"], key=lambda d: -docs["documents"][d]["last_access"]):
                label = document_title(docs["documents"], doc_id)
                names[label if label not in names else f"{label} ({doc_id})"] = doc_id
            if documents.options != names:
                documents.options = names
            if documents.value not in names.values():
                documents.value = docs["last_document"]
            doc_params = {"student": student, "doc_id": documents.value} if documents.value else None
            if doc_params:
                written = (await context.client.run("writing.student_text", doc_params, user))[0]["value"]
                timing = (await context.client.run("writing.student_time", doc_params, user))[0]["value"]
                tabs = ((await context.client.run("writing.student_tabs", doc_params, user))[0]["value"] or {})
                text.object = document_text(written, tabs.get("tabs") or {})
                counts.object = (f"{written['words']} words · {written['characters']} characters · "
                                 f"{round(timing['total_ms'] / 60000, 1)} min on task")
                plots[:] = [pn.pane.HoloViews(_activity_plot(timing["bins"]), sizing_mode="stretch_width"),
                            pn.pane.HoloViews(_typing_plot(typing["timestamps"]), sizing_mode="stretch_width")]
            else:
                text.object, counts.object = "*No document yet.*", ""
            notice[:] = []
        except BackendError as exc:
            kind = "danger" if exc.status in (0, 403) else "warning"
            notice[:] = [_message(f"Cannot show {student}: {exc}", kind)]

    documents.param.watch(lambda _event: pn.state.execute(refresh), "value")
    pn.state.onload(refresh)
    pn.state.add_periodic_callback(refresh, period=REFRESH_SECONDS * 1000)
    back = f"[← course overview](overview?course={course_id})" if course_id else ""
    return pn.Column(header, back and pn.pane.Markdown(back), notice, documents, counts, text, plots,
                     sizing_mode="stretch_width")


def class_page(context: DashboardContext) -> pn.viewable.Viewable:
    """The distribution of words and time on task across a course."""
    session = _Session()
    course_id, user = context.query_param("course"), context.user
    notice = pn.Column(sizing_mode="stretch_width")
    plots = pn.Row(sizing_mode="stretch_width")
    dirty = {"value": True}

    def draw() -> None:
        if not dirty["value"] or course is None:
            return
        dirty["value"] = False
        rows = list(course.rows.values())
        if course.problem:
            notice[:] = [_message(course.problem, "warning")]
        elif not rows:
            notice[:] = [_message("No students on this course's roster yet.")]
        else:
            notice[:] = []
        words = [row.get("words", 0) for row in rows]
        minutes = [round((row.get("time_on_task_ms") or 0) / 60000, 1) for row in rows]
        plots[:] = [
            pn.pane.HoloViews(hv.Histogram(_histogram(words), kdims="words").opts(
                title="Words in the current document", responsive=True, height=280), sizing_mode="stretch_width"),
            pn.pane.HoloViews(hv.Histogram(_histogram(minutes), kdims="minutes").opts(
                title="Time on task (min)", responsive=True, height=280), sizing_mode="stretch_width"),
        ]

    course = None

    async def load() -> None:
        nonlocal course
        courses = await _courses(context, user, notice)
        if courses is None:
            return
        if course_id not in {c["course_id"] for c in courses}:
            notice[:] = [_message(f"You cannot open course {course_id!r}: it is not one of your courses.", "danger")]
            return
        course = context.live.acquire(course_id)
        unwatch = course.watch(lambda _students: dirty.update(value=True))
        session.hold(lambda: (unwatch(), context.live.release(course_id)))
        draw()

    pn.state.onload(load)
    pn.state.add_periodic_callback(draw, period=2000)
    return pn.Column(pn.pane.Markdown(f"## Class view: {course_id}"), notice, plots, sizing_mode="stretch_width")


def _histogram(values: list[float]) -> tuple:
    if not values:
        return np.histogram([], bins=1, range=(0, 1))
    return np.histogram(values, bins=min(10, max(len(set(values)), 1)))
