"""The teacher's pages: the course overview (student cards, or a table), the student page (their
writing, and its playback), the class view.

Every page is built per browser session for the signed-in user (``pn.state.user``) and reads
through the query layer on that user's behalf, so a teacher only ever sees their own courses.
A session takes live data from `dashboards.live` with a plain callback and gives it back when
the session ends (Panel keeps watchers on shared objects otherwise).
"""

from __future__ import annotations

import asyncio
import datetime
import html
import time
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable
from urllib.parse import urlencode

import holoviews as hv
import numpy as np
import panel as pn

from lo_stream.dashboards.cards import (
    CSS,
    attention_order,
    card_fields,
    class_activity,
    class_strip_html,
    document_title,
    median_words,
    status_of,
)
from lo_stream.dashboards.frame import frame, heading_html, notice, plain_problem
from lo_stream.dashboards.live import LiveCourse, LiveCourses
from lo_stream.dashboards.widgets import CardGrid, LiveTable, RangeInput
from lo_stream.query.client import BackendError, QueryClient
from lo_stream.reducers import UNCHANGED, registry, scope_key
from lo_stream.settings import Settings

__all__ = [
    "BUILT_IN_PAGES",
    "COLUMNS",
    "LIVE_SESSIONS",
    "SORTS",
    "DashboardContext",
    "Playback",
    "class_page",
    "document_text",
    "overview_page",
    "overview_row",
    "student_page",
]

BUILT_IN_PAGES = [("overview", "Course overview"), ("class", "Class view")]
"""The navigation's built-in pages: (path, label). The student page is reached from a card."""
REFRESH_SECONDS = 5
TICK_SECONDS = 15  # statuses ("idle 4 min"), the class chart and the "needs attention" order
FLUSH_MS = 250  # changes arriving within this long reach the browser as one update
SORTS = ("Needs attention", "Name", "Most words", "Fewest words")

COLUMNS = [  # key, title, numeric
    ("name", "Student", False), ("status", "Status", False), ("document", "Current document", False),
    ("words", "Words", True), ("time_on_task_min", "Time on task (min)", True),
    ("typing_cpm", "Typing (characters per minute)", True), ("events", "Events", True),
    ("last_active", "Last active", False),
]


@dataclass
class DashboardContext:
    """What a page (also a module's page) gets: the query client, the live courses, the settings
    (Kafka, for writing playback), the navigation's pages, and the signed-in user."""

    client: QueryClient
    live: LiveCourses
    settings: Settings | None = None
    pages: list[tuple[str, str]] = field(default_factory=lambda: list(BUILT_IN_PAGES))

    @property
    def user(self) -> str | None:
        return pn.state.user

    def query_param(self, name: str) -> str | None:
        value = pn.state.session_args.get(name)
        return value[0].decode() if value else None

    def framed(self, current: str, heading: Any, *body: Any, course_id: str | None = None) -> pn.Column:
        return frame(self.pages, current, self.user, heading, *body, course_id=course_id)


def _time(milliseconds: Any) -> str:
    if not isinstance(milliseconds, (int, float)):
        return ""
    return datetime.datetime.fromtimestamp(milliseconds / 1000).strftime("%H:%M:%S")


def _characters_per_minute(median_interval_ms: Any) -> int | None:
    """Typing speed in words a teacher reads: the median interval between keys as characters per minute."""
    if not isinstance(median_interval_ms, (int, float)) or median_interval_ms <= 0:
        return None
    return round(60_000 / median_interval_ms)


def overview_row(row: dict, course_id: str, now_ms: float) -> dict:
    """One row of the table view (`LiveTable`) from one row of writing.course_overview."""
    student = row["key"]["student"]
    return {
        "id": student,
        "href": "student?" + urlencode({"course": course_id, "student": student}),
        "name": row.get("full_name") or student,
        "status": status_of(row, now_ms).text,
        "document": document_title(row.get("documents"), row.get("last_document")),
        "words": row.get("words") or 0,
        "time_on_task_min": round((row.get("total_time_on_task_ms") or 0) / 60000, 1),
        "typing_cpm": _characters_per_minute(row.get("typing_median_ms")),
        "events": row.get("events") or 0,
        "last_active": _time(row.get("last_active")),
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


class _Session:
    """What one browser session holds, released when it ends."""

    def __init__(self) -> None:
        LIVE_SESSIONS.add(self)
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

    def follow(self, context: DashboardContext, course_id: str, on_change: Callable[[set[str] | None], None]
               ) -> LiveCourse:
        """The live rows of a course, `on_change` called in this session with the students that changed."""
        course = context.live.acquire(course_id)
        unwatch = course.watch(lambda students: self.soon(partial(on_change, students)))
        self.hold(lambda: (unwatch(), context.live.release(course_id)))
        return course


LIVE_SESSIONS: "weakref.WeakSet[_Session]" = weakref.WeakSet()
"""The page sessions still in memory: one that outlives its browser tab is a leak."""


async def _courses(context: DashboardContext, user: str | None, notices: pn.Column) -> list[dict] | None:
    try:
        return await context.client.courses(user)
    except BackendError as exc:
        notices[:] = [notice(plain_problem(str(exc))[0], "danger")]
        return None


def _not_yours(course_id: str) -> pn.pane.HTML:
    return notice(f"You cannot open course {course_id!r}: it is not one of your courses.", "danger")


def _course_links(courses: list[dict], page: str) -> pn.pane.HTML:
    items = "".join(
        f'<li><a href="{page}?course={html.escape(c["course_id"])}">{html.escape(c["name"])}</a></li>' for c in courses
    )
    return pn.pane.HTML(f'<nav aria-label="Your courses"><ul>{items}</ul></nav>', sizing_mode="stretch_width")


def _integer_ticks(plot: Any, element: Any) -> None:
    """Counts of students or events: ticks at whole numbers only."""
    plot.state.yaxis.ticker.min_interval = 1


def _activity_chart(data: tuple) -> hv.Area:
    minutes_ago, counts = data
    return hv.Area((minutes_ago, counts), kdims=["minute"], vdims=["events"]).opts(
        responsive=True, height=170, toolbar=None, default_tools=[], color="#0b5cad", alpha=0.6,
        xlabel="Minutes before now", ylabel="Events per minute", title="The class's activity, last hour",
        hooks=[_integer_ticks], ylim=(0, None), framewise=True,
    )


def _live_chart(chart: Callable[[Any], hv.Element], data: Any) -> tuple[hv.streams.Pipe, pn.pane.HoloViews]:
    """A chart redrawn in place (no flicker) each time its pipe is sent new data."""
    pipe = hv.streams.Pipe(data=data)
    return pipe, pn.pane.HoloViews(hv.DynamicMap(chart, streams=[pipe]), sizing_mode="stretch_width")


def overview_page(context: DashboardContext) -> pn.viewable.Viewable:
    """Pick a course: a card per roster student (or a table), changed in place as their work
    arrives, in the order of who needs attention first; above them, the class at a glance."""
    session = _Session()
    # Read now: asynchronous callbacks do not run in the session's context.
    user, wanted = context.user, context.query_param("course")
    picker = pn.widgets.Select(name="Course", options={}, width=300)
    view = pn.widgets.RadioButtonGroup(name="View", options=["Cards", "Table"], value="Cards",
                                       button_type="primary", button_style="outline")
    order = pn.widgets.Select(name="Sort by", options=list(SORTS), value=SORTS[0], width=200)
    find = pn.widgets.TextInput(name="Find a student", placeholder="Part of a name", width=220)
    notices = pn.Column(sizing_mode="stretch_width")
    strip = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", name="class-strip")
    pipe, chart = _live_chart(_activity_chart, class_activity([], time.time() * 1000))
    grid = CardGrid(sizing_mode="stretch_width", name="cards")
    table = LiveTable(columns=[list(column) for column in COLUMNS], caption="Students", sizing_mode="stretch_width",
                      name="students")
    controls = pn.Row(view, order, find, sizing_mode="stretch_width")
    content = pn.Column(sizing_mode="stretch_width")
    state: dict[str, Any] = {"course": None, "median": 0.0, "dirty": set(), "sent": {}}

    def fields(course: LiveCourse, now: float) -> dict[str, dict]:
        return {s: card_fields(row, course.course_id, now, state["median"]) for s, row in course.rows.items()}

    def shown_rows(course: LiveCourse, now: float) -> list[dict]:
        rows = list(course.rows.values())
        needle = (find.value_input or find.value or "").strip().lower()  # as the teacher types
        if needle:
            rows = [r for r in rows if needle in (r.get("full_name") or r["key"]["student"]).lower()]
        if order.value == "Needs attention":
            return attention_order(rows, now)
        if order.value == "Name":
            return sorted(rows, key=lambda r: (r.get("full_name") or r["key"]["student"]).lower())
        most = order.value == "Most words"
        return sorted(rows, key=lambda r: (-(r.get("words") or 0) if most else (r.get("words") or 0),
                                           (r.get("full_name") or "").lower()))

    def arrange() -> None:
        """Every card (or table row) as it stands, in the chosen order, filtered."""
        course = state["course"]
        if course is None or not course.loaded:
            return
        now = time.time() * 1000
        state["median"] = median_words(course.rows.values())
        rows = shown_rows(course, now)
        state["dirty"].clear()
        if view.value == "Cards":
            cards = fields(course, now)
            if cards != state["sent"]:
                grid.cards = state["sent"] = cards
            grid.order = [r["key"]["student"] for r in rows]
            shown = grid
        else:
            table.rows = [overview_row(r, course.course_id, now) for r in rows]
            shown = table
        if content.objects != [shown]:
            content.objects = [shown]

    def describe(course: LiveCourse) -> None:
        """The notices and the class strip for the course as it stands."""
        notices[:] = []
        if course.problem:
            text, kind = plain_problem(course.problem)
            notices.append(notice(text, kind))
        if not course.loaded:
            return
        rows = list(course.rows.values())
        if not rows:
            notices.append(notice(f"Course {course.course_id} has no students on its roster yet "
                                  "(an administrator loads one: lo-stream rosters load FILE --course ID)."))
        elif not any(r.get("events") for r in rows):
            notices.append(notice("No student of this course has written anything yet: "
                                  "their cards fill in as they work."))
        strip.object = class_strip_html(rows, time.time() * 1000)

    def show_course(course: LiveCourse) -> None:
        if course is not state["course"]:
            return
        describe(course)
        if course.loaded:
            pipe.send(class_activity(course.rows.values(), time.time() * 1000))
        arrange()

    def changed(course: LiveCourse, students: set[str] | None) -> None:
        """Rows changed: noted now, shown at the next flush (a burst of changes is one update)."""
        if course is not state["course"]:
            return
        if students is None or not course.loaded or course.problem or any(s not in course.rows for s in students):
            show_course(course)
            return
        if notices.objects:
            describe(course)  # e.g. "nobody has written yet" no longer holds
        state["dirty"].update(students)

    def flush() -> None:
        course, dirty = state["course"], state["dirty"]
        if course is None or not dirty or not course.loaded:
            return
        now = time.time() * 1000
        students = [s for s in dirty if s in course.rows]
        dirty.clear()
        state["median"] = median_words(course.rows.values())
        strip.object = class_strip_html(list(course.rows.values()), now)
        if view.value == "Cards":
            cards = {s: card_fields(course.rows[s], course.course_id, now, state["median"]) for s in students}
            cards = {s: f for s, f in cards.items() if state["sent"].get(s) != f}
            if cards:
                state["sent"] = {**state["sent"], **cards}
                grid.update(cards)
        else:
            table.update([overview_row(course.rows[s], course.course_id, now) for s in students])

    def tick() -> None:
        """Time passes: idle minutes grow, the class chart moves, who needs attention changes."""
        course = state["course"]
        if course is None or not course.loaded:
            return
        describe(course)
        pipe.send(class_activity(course.rows.values(), time.time() * 1000))
        arrange()

    def open_course(course_id: str | None) -> None:
        session.release()
        state.update(course=None, sent={})
        state["dirty"].clear()
        content.objects = []
        if not course_id:
            return
        course = session.follow(context, course_id, lambda students: changed(course, students))
        state["course"] = course
        pn.state.location.update_query(course=course_id)
        show_course(course)

    picker.param.watch(lambda event: open_course(event.new), "value")
    for widget, name in ((view, "value"), (order, "value"), (find, "value"), (find, "value_input")):
        widget.param.watch(lambda _event: arrange(), name)

    async def load() -> None:
        courses = await _courses(context, user, notices)
        if courses is None:
            pn.state.add_periodic_callback(load, period=3000, count=1)
            return
        if not courses:
            notices[:] = [notice("You have no courses yet. An administrator adds them with lo-stream rosters courses.")]
            return
        options = {f"{c['name']} ({c['course_id']})": c["course_id"] for c in courses}
        if wanted and wanted not in options.values():
            # A placeholder first: a Select picks its first option, which would open a course.
            picker.options = {"(choose one of your courses)": None, **options}
            notices[:] = [_not_yours(wanted), _course_links(courses, "overview")]
            return
        picker.options = options
        chosen = wanted or courses[0]["course_id"]
        if picker.value == chosen:
            open_course(chosen)
        else:
            picker.value = chosen

    pn.state.onload(load)
    pn.state.add_periodic_callback(flush, period=FLUSH_MS)
    pn.state.add_periodic_callback(tick, period=TICK_SECONDS * 1000)
    return context.framed(
        "overview", "Course overview", picker, notices, strip, chart, controls, content,
        course_id=wanted,
    )


# -- the student page --------------------------------------------------------------------------


class Playback:
    """A document as it was after each of its edits: the student's events for it (from the events
    topic, `lo_stream.replay.history`) folded through the ``text`` reducer up to a chosen edit."""

    def __init__(self, events: list[tuple[float, dict]]) -> None:
        self.events = events
        self.reducer = registry.get("lo_stream.writing.text")
        self._at, self._state = 0, self.reducer.initial_state()

    def __len__(self) -> int:
        return len(self.events)

    def state_after(self, count: int) -> dict:
        """The document after its first `count` edits (0: before any)."""
        if count < self._at:
            self._at, self._state = 0, self.reducer.initial_state()
        for _, envelope in self.events[self._at:count]:
            result = self.reducer.function(envelope, self._state)
            self._state = self._state if result is UNCHANGED else result
        self._at = max(self._at, min(count, len(self.events)))
        return self._state

    def time_of(self, count: int) -> float | None:
        return self.events[count - 1][0] if 0 < count <= len(self.events) else None


def _time_on_task_chart(bins: dict[str, float]) -> hv.Bars:
    data = sorted((datetime.datetime.fromtimestamp(int(start) / 1000).strftime("%H:%M"), ms / 60000)
                  for start, ms in bins.items())
    return hv.Bars(data, "window", "minutes").opts(
        title="Time on task per 10 minutes", responsive=True, height=240, toolbar=None, default_tools=[],
        xlabel="10 minutes from", ylabel="Minutes on task", color="#0b5cad",
    )


TEXT_STYLES = {"white-space": "pre-wrap", "border": "1px solid #d0d7de", "border-radius": "6px",
               "padding": "8px 12px", "background": "#fff", "color": "#1f2328"}


def student_page(context: DashboardContext) -> pn.viewable.Viewable:
    """A student: their documents by title, the text as it stands, its playback, time on task and
    typing rhythm."""
    session = _Session()
    student, course_id, user = context.query_param("student"), context.query_param("course"), context.user
    heading = pn.pane.HTML(heading_html("Student"), sizing_mode="stretch_width", name="heading")
    notices = pn.Column(sizing_mode="stretch_width")
    documents = pn.widgets.Select(name="Document", options={}, width=420)
    counts = pn.pane.HTML("", sizing_mode="stretch_width", name="counts")
    text = pn.pane.Markdown("", sizing_mode="stretch_width", name="text", styles=TEXT_STYLES)
    moment = RangeInput(label="Moment of the session shown (edits)", start=0, end=1, value=1, sizing_mode="stretch_width",
                        height=50)
    play = pn.widgets.Button(name="Play", button_type="primary", width=90)
    to_now = pn.widgets.Button(name="Up to now", width=110)
    when = pn.pane.HTML("", name="playback-time")
    replayed = pn.pane.Markdown("", sizing_mode="stretch_width", name="playback-text", styles=TEXT_STYLES)
    playback_box = pn.Column(
        pn.pane.HTML("<h2 style='font-size:18px;margin:8px 0 0 0'>Writing playback</h2>"),
        pn.Row(play, to_now, when), moment, replayed, sizing_mode="stretch_width", visible=False,
    )
    charts = pn.Column(sizing_mode="stretch_width")
    body = pn.Column(documents, counts, text, playback_box, charts, sizing_mode="stretch_width", visible=False)
    state: dict[str, Any] = {"playback": None, "doc": None, "timer": None, "titles": {}}

    def show_moment(_event: Any = None) -> None:
        playback: Playback | None = state["playback"]
        if playback is None:
            return
        count = moment.value
        shown = playback.state_after(count)
        replayed.object = document_text(shown, state["titles"])
        at = playback.time_of(count)
        said = f"As of {_time(at)}, edit {count} of {len(playback)}" if at is not None else "Before the first edit"
        moment.value_text = said
        when.object = f"<span>{said}</span>"

    def stop_playing() -> None:
        if state["timer"] is not None:
            state["timer"].stop()
            state["timer"] = None
        play.name = "Play"

    def step() -> None:
        playback: Playback | None = state["playback"]
        if playback is None or moment.value >= moment.end:
            stop_playing()
            return
        moment.value = min(moment.value + max(len(playback) // 100, 1), moment.end)

    def toggle(_event: Any) -> None:
        if state["timer"] is not None:
            stop_playing()
            return
        if moment.value >= moment.end:
            moment.value = 0
        play.name = "Pause"
        state["timer"] = pn.state.add_periodic_callback(step, period=100)

    async def load_playback(doc_id: str) -> None:
        """Read the document's edits (only once the query layer has let this user see the student)."""
        if context.settings is None:
            return
        from lo_stream.replay import history  # Kafka: only for pages that play back

        text_reducer = registry.get("lo_stream.writing.text")
        events = await history(context.settings, text_reducer, student, scope_key([student, doc_id]))
        stop_playing()
        state["playback"] = Playback(events)
        moment.end = max(len(events), 1)
        moment.value = len(events)
        playback_box.visible = bool(events)
        show_moment()

    async def refresh() -> None:
        try:
            docs = (await context.client.run("writing.student_documents", {"student": student}, user))[0]["value"]
            typing = (await context.client.run("writing.student_typing", {"student": student}, user))[0]["value"]
        except BackendError as exc:
            body.visible = False
            notices[:] = [notice(f"Cannot show this student: {plain_problem(str(exc))[0]}", "danger")]
            return
        entries = docs["documents"] if isinstance(docs, dict) else {}
        options: dict[str, str] = {}
        for doc_id in sorted(entries, key=lambda d: -(entries[d].get("last_access") or 0)):
            label = f"{document_title(entries, doc_id)} · last edited {_time(entries[doc_id].get('last_access'))}"
            options[label if label not in options else f"{label} ({doc_id})"] = doc_id
        if documents.options != options:
            documents.options = options
        if documents.value not in options.values():
            documents.value = docs.get("last_document")
        doc_id = documents.value
        body.visible = True
        notices[:] = [] if entries else [notice("This student has not written in any document yet.")]
        if not doc_id:
            text.object, counts.object = "", ""
            return
        params = {"student": student, "doc_id": doc_id}
        written = (await context.client.run("writing.student_text", params, user))[0]["value"]
        timing = (await context.client.run("writing.student_time", params, user))[0]["value"]
        tabs = (await context.client.run("writing.student_tabs", params, user))[0]["value"] or {}
        state["titles"] = tabs.get("tabs") or {}
        text.object = document_text(written, state["titles"])
        cpm = _characters_per_minute(typing.get("median_interval_ms"))
        rhythm = (f" · typing about <strong>{cpm} characters per minute</strong> "
                  f"(median {typing['median_interval_ms']:.0f} ms between keys)" if cpm else "")
        counts.object = (f"<p><strong>{written['words']}</strong> words · {written['characters']} characters · "
                         f"<strong>{round(timing['total_ms'] / 60000, 1)}</strong> min on task in this document{rhythm}</p>")
        charts[:] = [pn.pane.HoloViews(_time_on_task_chart(timing["bins"]), sizing_mode="stretch_width")]
        if state["doc"] != doc_id:
            state["doc"] = doc_id
            await load_playback(doc_id)

    async def load() -> None:
        if not student or not course_id:
            notices[:] = [notice("Open a student from the course overview.")]
            return
        courses = await _courses(context, user, notices)
        if courses is None:
            return
        if course_id not in {c["course_id"] for c in courses}:
            notices[:] = [_not_yours(course_id)]
            return
        course = session.follow(context, course_id, lambda _students: None)
        for _ in range(100):  # the roster, for the student's name
            if course.loaded or (course.problem and "roster" in course.problem):
                break
            await asyncio.sleep(0.1)
        row = course.rows.get(student)
        if course.loaded and row is None:
            notices[:] = [notice(f"This student is not on the roster of course {course_id!r}.", "danger")]
            return
        name = (row or {}).get("full_name") or student
        heading.object = heading_html(name, f"Course {course_id}")
        await refresh()
        pn.state.add_periodic_callback(refresh, period=REFRESH_SECONDS * 1000)

    documents.param.watch(lambda _event: pn.state.execute(refresh), "value")
    moment.param.watch(show_moment, "value")
    play.on_click(toggle)
    async def up_to_now(_event: Any) -> None:
        if state["doc"]:
            await load_playback(state["doc"])  # the edits made since the page opened too

    to_now.on_click(up_to_now)
    pn.state.onload(load)
    session.hold(stop_playing)
    return context.framed("student", heading, notices, body, course_id=course_id)


# -- the class view ----------------------------------------------------------------------------


def _histogram(values: list[float], step: float) -> tuple:
    """Counts of students per bin of width `step` (at least one bin)."""
    top = max(values, default=0)
    edges = np.arange(0, (top // step + 2) * step, step)
    return np.histogram(values, bins=edges)


def _distribution(data: tuple, what: str, title: str) -> hv.Histogram:
    """How many students fall in each bin of `what`; `data` is (values, bin width)."""
    values, step = data
    counts, edges = _histogram(values, step)
    return hv.Histogram((edges, counts), kdims=[what], vdims=["students"]).opts(
        title=title, responsive=True, height=260, toolbar=None, default_tools=[], color="#0b5cad",
        ylabel="Students", hooks=[_integer_ticks], framewise=True,
    )


def class_page(context: DashboardContext) -> pn.viewable.Viewable:
    """A course at a glance: the class strip, its activity over the last hour, and how words and
    time on task are spread across the class."""
    session = _Session()
    course_id, user = context.query_param("course"), context.user
    notices = pn.Column(sizing_mode="stretch_width")
    strip = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", name="class-strip")
    activity, activity_chart = _live_chart(_activity_chart, class_activity([], time.time() * 1000))
    words, words_chart = _live_chart(partial(_distribution, what="words", title="Words in the current document"),
                                     ([], 10))
    minutes, minutes_chart = _live_chart(partial(_distribution, what="minutes", title="Time on task (minutes)"),
                                         ([], 5))
    plots = pn.Column(activity_chart, pn.Row(words_chart, minutes_chart, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
    dirty = {"value": True}
    course: LiveCourse | None = None

    def draw() -> None:
        if not dirty["value"] or course is None:
            return
        dirty["value"] = False
        notices[:] = []
        if course.problem:
            text, kind = plain_problem(course.problem)
            notices.append(notice(text, kind))
        if not course.loaded:
            return
        rows = list(course.rows.values())
        now = time.time() * 1000
        if not rows:
            notices.append(notice("This course has no students on its roster yet."))
            return
        strip.object = class_strip_html(rows, now)
        counts = [row.get("words") or 0 for row in rows]
        activity.send(class_activity(rows, now))
        words.send((counts, max(10, int(max(counts, default=0) // 100 + 1) * 10)))
        minutes.send(([(row.get("total_time_on_task_ms") or 0) / 60000 for row in rows], 5))

    async def load() -> None:
        nonlocal course
        courses = await _courses(context, user, notices)
        if courses is None:
            return
        if not course_id:
            notices[:] = [notice("Choose a course to see its class view:"), _course_links(courses, "class")]
            return
        if course_id not in {c["course_id"] for c in courses}:
            notices[:] = [_not_yours(course_id), _course_links(courses, "class")]
            return
        course = session.follow(context, course_id, lambda _students: dirty.update(value=True))
        draw()

    def tick() -> None:  # time passes: statuses and the activity chart move without new events
        dirty["value"] = True

    pn.state.onload(load)
    pn.state.add_periodic_callback(tick, period=TICK_SECONDS * 1000)
    pn.state.add_periodic_callback(draw, period=2000)
    return context.framed("class", "Class view", notices, strip, plots, course_id=course_id)
