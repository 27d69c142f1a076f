"""The frame around every dashboard page: the project's name, navigation (courses, the class view,
each installed module's pages), who is signed in and a way to sign out; and plain-words notices
for the states a page can be in (no course chosen, no events yet, restoring, not your course).
"""

from __future__ import annotations

import html
from typing import Any, Sequence
from urllib.parse import urlencode

import panel as pn

__all__ = ["FRAME_CSS", "frame", "heading_html", "notice", "plain_problem"]

FRAME_CSS = """
:host { --lo-ink: #1f2328; --lo-muted: #57606a; --lo-accent: #0b5cad; }
.lo-header { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 24px; padding: 10px 16px;
  background: #1f2328; color: #fff; font-family: system-ui, "Segoe UI", sans-serif; font-size: 15px; }
.lo-header a { color: #fff; }
.lo-brand { font-weight: 700; font-size: 18px; text-decoration: none; }
.lo-header nav ul { display: flex; flex-wrap: wrap; gap: 4px 18px; list-style: none; margin: 0; padding: 0; }
.lo-header nav a { text-decoration: none; padding: 2px 0; border-bottom: 2px solid transparent; }
.lo-header nav a:hover, .lo-header nav a:focus, .lo-header nav a[aria-current="page"] { border-bottom-color: #fff; }
.lo-header a:focus { outline: 2px solid #fff; outline-offset: 3px; }
.lo-who { margin-left: auto; color: #eaeef2; }
.lo-heading { font-family: system-ui, "Segoe UI", sans-serif; color: var(--lo-ink); margin: 4px 0; }
.lo-heading h1 { font-size: 24px; margin: 0; }
.lo-heading p { color: var(--lo-muted); margin: 2px 0 0 0; }
"""

# Alert colours with text at WCAG AA contrast on their backgrounds.
NOTICE_STYLES = {
    "info": ("#ddf4ff", "#0a3069", "#54aeff"),
    "warning": ("#fff8c5", "#6f4400", "#d4a72c"),
    "danger": ("#ffebe9", "#82071e", "#ff8182"),
}


def _link(path: str, label: str, current: str, course_id: str | None) -> str:
    target = path + ("?" + urlencode({"course": course_id}) if course_id else "")
    here = ' aria-current="page"' if path == current else ""
    return f'<li><a href="{html.escape(target)}"{here}>{html.escape(label)}</a></li>'


def heading_html(heading: str, subtitle: str = "") -> str:
    """A page's heading (its one ``h1``), with a line under it."""
    return (f'<div class="lo-heading"><h1>{html.escape(heading)}</h1>'
            + (f"<p>{html.escape(subtitle)}</p>" if subtitle else "") + "</div>")


def frame(pages: Sequence[tuple[str, str]], current: str, user: str | None, heading: str | pn.pane.HTML, *body: Any,
          subtitle: str = "", course_id: str | None = None) -> pn.Column:
    """A page: the header (name, navigation, the signed-in user, sign out), its heading, its body.

    `pages` are the navigation's (path, label) pairs; each link keeps the course open (`course_id`).
    `heading` is text, or a pane (made with `heading_html`) that the page changes later."""
    links = "".join(_link(path, label, current, course_id) for path, label in pages)
    who = (f'<span class="lo-who">Signed in as <strong>{html.escape(user)}</strong> · '
           f'<a href="logout">Sign out</a></span>') if user else ""
    header = pn.pane.HTML(
        f'<header class="lo-header"><a class="lo-brand" href="overview">lo_stream</a>'
        f'<nav aria-label="Dashboards"><ul>{links}</ul></nav>{who}</header>',
        stylesheets=[FRAME_CSS], sizing_mode="stretch_width", margin=0,
    )
    if isinstance(heading, pn.pane.HTML):
        title = heading
        title.stylesheets = [*title.stylesheets, FRAME_CSS]
    else:
        title = pn.pane.HTML(heading_html(heading, subtitle), stylesheets=[FRAME_CSS], sizing_mode="stretch_width",
                             name="heading")
    main = pn.Column(title, *body, sizing_mode="stretch_width", margin=(8, 16))
    return pn.Column(header, main, sizing_mode="stretch_width", margin=0)


def notice(text: str, kind: str = "info") -> pn.pane.HTML:
    """A message in plain words; warnings and errors are announced to screen readers."""
    background, ink, border = NOTICE_STYLES[kind]
    role = "status" if kind == "info" else "alert"
    return pn.pane.HTML(
        f'<div role="{role}" style="background:{background};color:{ink};border:1px solid {border};'
        f'border-radius:6px;padding:10px 14px;font-family:system-ui,sans-serif">{html.escape(text)}</div>',
        sizing_mode="stretch_width",
    )


def plain_problem(problem: str) -> tuple[str, str]:
    """(what a teacher reads, notice kind) for a problem the query layer reported.

    >>> plain_problem("worker http://w:6066 is still restoring its tables (after a restart)")[0]
    'The data of this course is being restored after a restart. This page fills in by itself in a moment.'
    >>> plain_problem("the query layer at http://w:6066 closed the live connection; retrying")[1]
    'danger'
    """
    lowered = problem.lower()
    if "restoring" in lowered or "rebalancing" in lowered or "still starting" in lowered:
        return ("The data of this course is being restored after a restart. "
                "This page fills in by itself in a moment.", "warning")
    if lowered.startswith("connecting"):
        return "Loading this course ...", "info"
    if any(sign in lowered for sign in ("unreachable", "cannot be reached", "closed the live connection", "retrying")):
        return (f"The data service cannot be reached right now ({problem}). This page reconnects by itself.",
                "danger")
    if "roster" in lowered:
        return ("This course has no roster yet. An administrator loads one with "
                "lo-stream rosters load FILE --course ID.", "info")
    return problem, "warning"
