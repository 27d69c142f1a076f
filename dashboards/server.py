"""``lo-stream dashboard``: the teacher dashboards, served by Panel behind a login.

Responsibilities:

1. sign teachers and admins in with the names and passwords of the users file (our own login
   page, ``templates/login.html``; ``pn.state.user``);
2. serve the built-in pages and every installed module's pages, each in the same frame;
3. sign in to the query layer with the server's own admin token, asking on the user's behalf;
4. report what it holds at ``/lo_stream/status`` (live courses and their watchers, page sessions
   in memory, resident memory), to admins.
"""

from __future__ import annotations

import gc
import json
import secrets
from pathlib import Path
from typing import Callable

import holoviews as hv
import panel as pn
from panel.auth import BasicAuthProvider, BasicLoginHandler
from tornado.web import RequestHandler

from lo_stream.query.client import QueryClient
from lo_stream.dashboards.live import LiveCourses
from lo_stream.dashboards.pages import (
    BUILT_IN_PAGES,
    LIVE_SESSIONS,
    DashboardContext,
    class_page,
    overview_page,
    student_page,
)
from lo_stream.modules import Module
from lo_stream.query.access import UserFileError, UserStore
from lo_stream.settings import Settings

__all__ = ["SERVICE_USER", "dashboard_pages", "serve_dashboards", "service_token"]

SERVICE_USER = "lo_stream-dashboard"
TEMPLATES = Path(__file__).parent / "templates"


def service_token(settings: Settings) -> str:
    """The dashboard server's admin token: from the settings, or a fresh one in the users file."""
    if settings.dashboard_token:
        return settings.dashboard_token
    users = UserStore(settings.users_file)
    users.revoke(SERVICE_USER)  # the old token (unknown: only its hash is kept) is of no use
    return users.add(SERVICE_USER, "admin")


ACCESS_RECHECK_MS = 2000  # how soon a revoked user's open pages are signed out


def dashboard_pages(context: DashboardContext, modules: list[Module],
                    users: UserStore) -> dict[str, Callable[[], object]]:
    """Page path -> function building the page for a new session, the built-in pages first. A
    module's page is shown inside the same frame, under the navigation's label ``module: page``."""
    builders: dict[str, Callable[[DashboardContext], object]] = {
        "overview": overview_page, "student": student_page, "class": class_page,
    }
    context.pages[:] = list(BUILT_IN_PAGES)
    for module in modules:
        for name, build in (module.dashboards or {}).items():
            path = f"{module.name}.{name}"
            builders[path] = _framed(build, path, f"{module.name}: {name.replace('_', ' ')}")
            context.pages.append((path, f"{module.name}: {name.replace('_', ' ')}"))
    return {path: _for_each_session(build, context, users) for path, build in builders.items()}


def _framed(build: Callable[[DashboardContext], object], path: str, label: str) -> Callable[[DashboardContext], object]:
    def page(context: DashboardContext) -> object:
        return context.framed(path, label, build(context), course_id=context.query_param("course"))

    return page


def _for_each_session(build: Callable[[DashboardContext], object], context: DashboardContext,
                      users: UserStore) -> Callable[[], object]:
    # A plain function: Panel serves functions, not functools.partial objects.
    def page() -> object:
        pn.state.add_periodic_callback(lambda: _sign_out_if_revoked(users), period=ACCESS_RECHECK_MS)
        return build(context)

    return page


def _sign_out_if_revoked(users: UserStore) -> None:
    """A session whose user was revoked (``lo-stream users revoke``) is sent to /logout: the tab
    leaves, its session ends within seconds, and with it the live data it held."""
    try:
        revoked = users.by_name(pn.state.user) is None
    except UserFileError:
        return  # unreadable for now: nobody is signed out for that
    if revoked and pn.state.location is not None:
        pn.state.location.reload = True
        pn.state.location.pathname = "/logout"


class _UsersLoginHandler(BasicLoginHandler):
    users: UserStore

    def _validate(self, username: str, password: str) -> bool:
        caller = self.users.by_password(username, password)
        return caller is not None and caller.name != SERVICE_USER


class _UsersAuthProvider(BasicAuthProvider):
    def __init__(self, users: UserStore) -> None:
        self._users = users  # before Panel's __init__, which already asks for the login handler
        super().__init__(login_template=str(TEMPLATES / "login.html"), logout_template=str(TEMPLATES / "logout.html"))

    @property
    def login_handler(self):
        base = super().login_handler  # sets the endpoint and template on Panel's handler
        return type("LoStreamLoginHandler", (_UsersLoginHandler,), {
            "users": self._users, "_login_endpoint": base._login_endpoint, "_login_template": base._login_template,
        })


class _StatusHandler(RequestHandler):
    """What the server holds (which courses are watched, by how many): for signed-in admins only."""

    def initialize(self, live: LiveCourses, users: UserStore) -> None:
        self.live = live
        self.users = users

    def get(self) -> None:
        name = self.get_secure_cookie("user", max_age_days=pn.config.oauth_expiry)  # Panel's login cookie
        entry = self.users.by_name(name.decode("utf-8", "replace")) if name else None
        if entry is None:
            self.set_status(401)
            self.write({"error": "sign in (at /login) as an admin to see the dashboard server's status"})
            return
        if entry["role"] != "admin":
            self.set_status(403)
            self.write({"error": f"{entry['name']} is a {entry['role']}: the status is for admins"})
            return
        self.set_header("Content-Type", "application/json")
        gc.collect()  # what is still counted after this is held by something
        self.write(json.dumps({"live_courses": self.live.status(), "sessions": len(LIVE_SESSIONS),
                               "memory_mb": _resident_mb()}))


def _resident_mb() -> float | None:
    """This process's resident memory (Linux), or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def serve_dashboards(settings: Settings, modules: list[Module], *,
                     announce: Callable[[list[str]], None] = lambda pages: None) -> None:
    """Serve until stopped (Ctrl-C); `announce` gets the page paths first."""
    pn.extension("tabulator", notifications=False)
    hv.extension("bokeh", logo=False)
    client = QueryClient(settings.query_url, service_token(settings))
    context = DashboardContext(client, LiveCourses(client), settings)
    port = settings.dashboard_port
    users = UserStore(settings.users_file)
    pages = dashboard_pages(context, modules, users)
    announce(list(pages))
    pn.serve(
        pages,
        port=port,
        address=settings.bind_host,
        websocket_origin=[f"{settings.bind_host}:{port}", f"localhost:{port}"],
        auth_provider=_UsersAuthProvider(users),
        cookie_secret=settings.dashboard_cookie_secret or secrets.token_urlsafe(32),
        title={path: f"{label} · lo_stream" for path, label in [*context.pages, ("student", "Student")]},
        extra_patterns=[("/lo_stream/status", _StatusHandler, {"live": context.live, "users": users})],
        index=str(TEMPLATES / "index.html"),  # "/" (where signing in lands) goes to the course overview
        # A closed tab's session is destroyed (and lets go of its live data) within seconds.
        check_unused_sessions_milliseconds=1000,
        unused_session_lifetime_milliseconds=2000,
        show=False,
        start=True,
    )
