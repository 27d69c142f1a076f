"""The ``lo-stream`` command (also ``python -m lo_stream``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from lo_stream import logs
from lo_stream.settings import SETTINGS_FILE_ENV, Settings, SettingsError, load_settings

__all__ = ["main"]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _ensure_topics(settings: Settings) -> None:
    from lo_stream.topics import TopicMismatchError, ensure_topics

    try:
        asyncio.run(ensure_topics(settings))
    except TopicMismatchError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"TOML settings file (same as {SETTINGS_FILE_ENV}).",
)
def cli(settings_file: Path | None) -> None:
    """lo_stream: learning analytics on Kafka, RocksDB and Panel."""
    if settings_file is not None:
        # Through the environment, so that every process we start reads the same file.
        os.environ[SETTINGS_FILE_ENV] = str(settings_file.resolve())


# -- the embedded broker -------------------------------------------------------------------


@cli.group()
def kafka() -> None:
    """Run a local single-node Apache Kafka broker (KRaft) from Kafka's jars."""


_port_option = click.option("--port", type=int, default=None, help="Broker port (default: LO_STREAM_KAFKA_PORT, 9092).")
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Broker data directory (default: <LO_STREAM_DATA_DIR>/kafka).",
)


def _local_kafka(port: int | None, data_dir: Path | None):
    from lo_stream.connectors.local_kafka import LocalKafka

    return LocalKafka(_settings(kafka_port=port), data_dir)


@kafka.command("start")
@_port_option
@_data_dir_option
def kafka_start(port: int | None, data_dir: Path | None) -> None:
    """Start the broker (fetching its jars with Maven the first time) and wait until it answers."""
    from lo_stream.connectors.exceptions import LocalKafkaError

    broker = _local_kafka(port, data_dir)
    if broker.status().running:
        click.echo(f"already running: {broker.status().describe()}")
        return
    if not (broker.libs_dir / ".complete").exists():
        click.echo(f"fetching Apache Kafka {broker.settings.kafka_version} jars with Maven into {broker.libs_dir} ...")
    try:
        status = broker.start()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(status.describe())
    click.echo(f"bootstrap: {status.bootstrap}")


@kafka.command("stop")
@_port_option
@_data_dir_option
def kafka_stop(port: int | None, data_dir: Path | None) -> None:
    """Stop the broker of a data directory."""
    broker = _local_kafka(port, data_dir)
    if broker.stop():
        click.echo(f"stopped Kafka (data dir {broker.data_dir})")
    else:
        click.echo(f"Kafka was not running (data dir {broker.data_dir})")


@kafka.command("status")
@_port_option
@_data_dir_option
def kafka_status(port: int | None, data_dir: Path | None) -> None:
    """Say whether the broker runs and where its log is; exit code 3 when it does not run."""
    status = _local_kafka(port, data_dir).status()
    click.echo(status.describe())
    if not status.running:
        sys.exit(3)


# -- the worker ----------------------------------------------------------------------------


@cli.command()
@click.option("--loglevel", "-l", default="info", show_default=True, help="Worker log level.")
def worker(loglevel: str) -> None:
    """Run a worker: consume events, run the reducers, keep the tables, serve queries."""
    from lo_stream.modules import ModuleLoadError
    from lo_stream.reducers import ReducerDefinitionError
    from lo_stream.replay import ReplayRefused, prepare_worker
    from lo_stream.topics import TopicMismatchError, ensure_topics
    from lo_stream.worker import run_worker, worker_reducers

    logs.configure(loglevel)
    settings = _settings()
    try:
        asyncio.run(ensure_topics(settings))
        for done in asyncio.run(prepare_worker(settings, worker_reducers(settings)[1])):
            click.secho(done, fg="yellow", err=True)
        run_worker(settings)
    except (TopicMismatchError, ModuleLoadError, ReducerDefinitionError, ReplayRefused) as exc:
        raise click.ClickException(str(exc)) from None


# -- modules -------------------------------------------------------------------------------


@cli.command()
def modules() -> None:
    """List the installed modules and the reducers each one brings."""
    from lo_stream.modules import ModuleLoadError, load_modules

    try:
        installed = load_modules()
    except ModuleLoadError as exc:
        raise click.ClickException(str(exc)) from None
    if not installed:
        click.echo('no modules installed (a module declares an entry point in group "lo_stream.modules")')
    for module in installed:
        click.echo(f"{module.name}  ({module.package}, from {module.distribution})")
        for reducer in module.reducers:
            sources = ", ".join(sorted(reducer.sources)) or "all"
            events = ", ".join(sorted(reducer.event_types)) or "all"
            click.echo(
                f"  {reducer.id}  v{reducer.version}  scope: {', '.join(reducer.scope)}  "
                f"sources: {sources}  events: {events}"
            )


@cli.command("new-module")
@click.argument("name")
@click.option("--directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to create the package's directory.")
def new_module(name: str, directory: Path) -> None:
    """Create module NAME from the template: a reducer and its test, a query, a dashboard page."""
    from lo_stream.scaffold import ScaffoldError, new_module as scaffold

    try:
        target = scaffold(name, directory)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {target}/ (see its README.md); make it live with:\n"
               f"  pip install -e {target}\nthen restart the worker and the dashboard")


# -- ways in: the gateway and its tokens ---------------------------------------------------


@cli.command()
@click.option("--port", type=int, default=None, help="Port (default: LO_STREAM_GATEWAY_PORT, 8888).")
@click.option(
    "--insecure-identity",
    is_flag=True,
    default=None,
    help="Development only: accept test_framework_fake_identity (LO_STREAM_GATEWAY_INSECURE_IDENTITY).",
)
def gateway(port: int | None, insecure_identity: bool | None) -> None:
    """Serve the ingest gateway: websocket /wsapi/in/, POST /api/events, /healthz, /metrics."""
    from aiohttp import web

    from lo_stream.connectors.gateway import Gateway

    settings = _settings(gateway_port=port, gateway_insecure_identity=insecure_identity)
    _ensure_topics(settings)
    logs.configure()
    web.run_app(
        Gateway(settings).app(),
        host=settings.bind_host,
        port=settings.gateway_port,
        access_log_class=logs.RedactingAccessLogger,
        print=lambda _: click.echo(
            f"gateway on ws://{settings.bind_host}:{settings.gateway_port}/wsapi/in/ "
            f"and http://{settings.bind_host}:{settings.gateway_port}/api/events -> {settings.topics.events}"
        ),
    )


@cli.group()
def tokens() -> None:
    """Client tokens for the gateway (stored hashed in LO_STREAM_GATEWAY_TOKENS_FILE)."""


def _token_store():
    from lo_stream.connectors.auth import TokenStore

    return TokenStore(_settings().gateway_tokens_file)


@tokens.command("add")
@click.argument("user_id")
@click.option("--name", default=None, help="A name to revoke it by (default: the user id).")
def tokens_add(user_id: str, name: str | None) -> None:
    """Create a token whose events belong to USER_ID, and print it (it is not shown again)."""
    from lo_stream.connectors.exceptions import TokenFileError

    store = _token_store()
    try:
        token = store.add(user_id, name)
    except TokenFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)
    click.echo(f"(stored hashed in {store.path}; give it to the client, it is not shown again)", err=True)


@tokens.command("list")
def tokens_list() -> None:
    """List token names, users and creation times (never the tokens)."""
    from lo_stream.connectors.exceptions import TokenFileError

    try:
        entries = _token_store().entries()
    except TokenFileError as exc:
        raise click.ClickException(str(exc)) from None
    for entry in entries:
        click.echo(f"{entry['name']}  user: {entry['user_id']}  created: {entry.get('created', '?')}")


@tokens.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke the token called NAME; the gateway refuses it from its next use."""
    from lo_stream.connectors.exceptions import TokenFileError

    try:
        revoked = _token_store().revoke(name)
    except TokenFileError as exc:
        raise click.ClickException(str(exc)) from None
    if not revoked:
        raise click.ClickException(f"no token named {name!r} (see lo-stream tokens list)")
    click.echo(f"revoked {name}")


@cli.group()
def rosters() -> None:
    """Course rosters and courses (compacted topics, one record per course)."""


@rosters.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--course", "course_id", required=True, help="The course this roster is for.")
def rosters_load(path: Path, course_id: str) -> None:
    """Make PATH (LO roster JSON, or CSV user_id,given_name,family_name,email) the roster of a course."""
    from lo_stream.connectors.exceptions import RosterFileError
    from lo_stream.connectors.rosters import load_roster

    settings = _settings()
    _ensure_topics(settings)
    try:
        record = asyncio.run(load_roster(settings, path, course_id))
    except RosterFileError as exc:
        raise click.ClickException(f"{exc} (nothing was loaded)") from None
    click.echo(f"course {course_id}: {len(record['students'])} students -> {settings.topics.rosters}")


@rosters.command("courses")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rosters_courses(path: Path) -> None:
    """Load courses (CSV id,name,teacher, or a JSON list): their names and teachers."""
    from lo_stream.connectors.exceptions import RosterFileError
    from lo_stream.connectors.rosters import load_courses

    settings = _settings()
    _ensure_topics(settings)
    try:
        courses = asyncio.run(load_courses(settings, path))
    except RosterFileError as exc:
        raise click.ClickException(f"{exc} (nothing was loaded)") from None
    click.echo(f"{len(courses)} courses -> {settings.topics.courses}")


@rosters.command("list")
def rosters_list() -> None:
    """Show every course with its teachers and the size of its roster."""
    from lo_stream.tables.rosters import RosterTable

    settings = _settings()
    _ensure_topics(settings)

    async def read() -> RosterTable:
        async with RosterTable(settings) as table:
            return table

    table = asyncio.run(read())
    for course_id in table.course_ids():
        course = table.courses.get(course_id, {})
        students = table.students(course_id)
        click.echo(
            f"{course_id}  {course.get('name', '(no course record)')}  "
            f"teachers: {', '.join(course.get('teachers', [])) or '-'}  "
            f"students: {len(students) if students is not None else '(no roster)'}"
        )


@cli.command("replay-file")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Events per second (default: as fast as possible).")
@click.option("--user", default=None, help="Whose events raw (non-envelope) lines are.")
def replay_file(path: Path, rate: float | None, user: str | None) -> None:
    """Store a JSON-lines log (envelopes, raw events, or LO .study.log lines) in the events topic."""
    from lo_stream.connectors.log_files import count_lines, replay_file as replay

    settings = _settings()
    _ensure_topics(settings)
    with _progress_bar("events") as progress:
        task = progress.add_task(path.name, total=count_lines(path), rate=0.0)
        started = time.monotonic()

        def advance(events: int) -> None:
            progress.update(task, completed=events, rate=events / max(time.monotonic() - started, 1e-6))

        summary = asyncio.run(replay(settings, path, rate=rate, user=user, on_progress=advance))
    for number, reason in summary.bad_lines:
        click.echo(f"{path}:{number}: {reason} (dead-lettered to {settings.topics.dead_letters})", err=True)
    click.echo(
        f"{summary.events} events in {summary.messages} messages -> {settings.topics.events} "
        f"in {summary.seconds:.1f}s ({summary.rate:.0f} events/s); {len(summary.bad_lines)} bad lines"
    )
    if summary.bad_lines:
        sys.exit(1)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _progress_bar(unit: str):
    """A rich progress bar on stderr: done of total, rate (give it a ``rate`` field), time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]:>8.0f}} {unit}/s"), TimeRemainingColumn(),
    )
    return Progress(*columns, console=_stderr_console())


@cli.command()
@click.option("--students", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--ici", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Mean seconds between a student's keystrokes.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed invents the same class.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds to run (default: until Ctrl-C).")
@click.option("--direct", is_flag=True, help="Write straight to Kafka instead of through the gateway.")
@click.option("--course", "course_id", default="demo-class", show_default=True)
@click.option("--teacher", "teachers", multiple=True, default=("teacher",), show_default=True,
              help="Who teaches the course (repeatable).")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write what each student typed (JSON) here at the end.")
def simulate(students: int, ici: float, seed: int, duration: float | None, direct: bool, course_id: str,
             teachers: tuple[str, ...], summary: Path | None) -> None:
    """A class of students typing essays into Google Docs, one save event per keystroke."""
    import json

    from lo_stream.connectors.simulator import SimulationError, simulate as run_class

    settings = _settings()
    _ensure_topics(settings)
    how = "straight to Kafka" if direct else f"through the gateway on port {settings.gateway_port}"
    click.echo(f"{students} students of {course_id} typing {how} (roster loaded; Ctrl-C stops) ...")
    try:
        pupils = asyncio.run(
            run_class(settings, students, ici=ici, seed=seed, duration=duration, direct=direct,
                      course_id=course_id, teachers=teachers)
        )
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        return
    click.echo(f"{sum(p.events for p in pupils)} events from {len(pupils)} students")
    if summary is not None:
        summary.write_text(json.dumps({p.safe_user_id: p.summary() for p in pupils}, indent=2))


# -- the query layer -----------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Teachers and admins who may query (LO_STREAM_USERS_FILE)."""


def _user_store():
    from lo_stream.query.access import UserStore

    return UserStore(_settings().users_file)


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["teacher", "admin"]), default="teacher", show_default=True)
@click.option("--course", "courses", multiple=True, help="A course this teacher sees (repeatable; course records "
              "naming them as teacher count too).")
@click.option("--password", is_flag=True, help="Also set a password (asked for), for signing in to dashboards.")
def users_add(name: str, role: str, courses: tuple[str, ...], password: bool) -> None:
    """Create a user and print their token (it is not shown again)."""
    from lo_stream.query.access import UserFileError

    secret = click.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    store = _user_store()
    try:
        token = store.add(name, role, list(courses), secret)
    except UserFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)
    click.echo(f"({role} {name} stored in {store.path}; the token is not shown again)", err=True)


@users.command("list")
def users_list() -> None:
    """List users, roles and courses (never secrets)."""
    from lo_stream.query.access import UserFileError

    try:
        entries = _user_store().entries()
    except UserFileError as exc:
        raise click.ClickException(str(exc)) from None
    for entry in entries:
        courses = ", ".join(entry.get("courses") or []) or "-"
        click.echo(f"{entry['name']}  role: {entry['role']}  courses: {courses}")


@users.command("revoke")
@click.argument("name")
def users_revoke(name: str) -> None:
    """Remove a user; their token and password stop working at once."""
    if not _user_store().revoke(name):
        raise click.ClickException(f"no user named {name!r} (see lo-stream users list)")
    click.echo(f"removed {name}")


@cli.command("query")
@click.argument("export")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter (repeatable).")
@click.option("--url", default=None, help="A worker's URL (default: http://<bind_host>:<worker_port>).")
@click.option("--token", envvar="LO_STREAM_QUERY_TOKEN", default=None, help="Your token (or LO_STREAM_QUERY_TOKEN).")
def query_command(export: str, params: tuple[str, ...], url: str | None, token: str | None) -> None:
    """Run a module's export (e.g. writing.course_overview --param course_id=alg-1) and print the JSON."""
    import json

    from lo_stream.query.client import BackendError, QueryClient

    settings = _settings()
    if not token:
        raise click.ClickException("give your token with --token or LO_STREAM_QUERY_TOKEN (lo-stream users add)")
    values = {}
    for param in params:
        name, sep, value = param.partition("=")
        if not sep or not name:
            raise click.ClickException(f"--param {param!r} is not NAME=VALUE")
        values[name] = value
    client = QueryClient(url or settings.query_url, token)

    async def ask() -> object:
        try:
            return await client.run(export, values, None)
        finally:
            await client.close()

    try:
        result = asyncio.run(ask())
    except BackendError as exc:
        if not exc.status:
            raise click.ClickException(f"{exc}: start a worker with lo-stream worker") from None
        raise click.ClickException(f"{exc.status}: {exc}") from None
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))


# -- offline mode, replay and history ------------------------------------------------------


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--module", "module_name", default=None, help="Run this module's reducers (default: every installed one).")
@click.option("--reducer", "reducer_ids", multiple=True, help="Run this reducer (repeatable; instead of --module).")
@click.option("--user", default=None, help="Whose events raw (non-envelope) lines are.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the tables here as JSON (default: print them).")
def offline(path: Path, module_name: str | None, reducer_ids: tuple[str, ...], user: str | None,
            output: Path | None) -> None:
    """Run reducers over a JSON-lines log file in this process, with no Kafka, and print each table."""
    import json

    from lo_stream import offline as offline_mode
    from lo_stream.modules import ModuleLoadError

    if module_name and reducer_ids:
        raise click.ClickException("give --module or --reducer, not both")
    try:
        result = offline_mode.run(path, module_name or list(reducer_ids) or None, user=user)
    except (KeyError, ModuleLoadError) as exc:
        raise click.ClickException(str(exc).strip('"')) from None
    document = json.dumps(result.tables, indent=2, ensure_ascii=False, sort_keys=True)
    if output:
        output.write_text(document + "\n")
    else:
        click.echo(document)
    for number, reason in result.bad_lines:
        click.echo(f"{path}:{number}: {reason}", err=True)
    for error in result.errors:
        click.echo(f"{error['reducer']} raised on an event of {error['key']}: {error['error']}", err=True)
    sizes = ", ".join(f"{rid}: {len(table)} keys" for rid, table in result.tables.items())
    click.echo(f"{result.events} events through {len(result.tables)} reducers ({sizes}); "
               f"{len(result.bad_lines)} bad lines, {len(result.errors)} reducer errors", err=True)
    if result.bad_lines:
        sys.exit(1)


def _when(value: str) -> "datetime.datetime | None":
    """`earliest` (None) or an ISO date/time; a time without a zone is local."""
    import datetime

    if value == "earliest":
        return None
    try:
        return datetime.datetime.fromisoformat(value).astimezone()
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'earliest' nor an ISO date/time such as 2026-11-20T08:00") from None


def _installed_reducers(ids: str | None) -> list:
    from lo_stream.modules import ModuleLoadError, load_modules
    from lo_stream.reducers import registry

    try:
        load_modules()
        return list(registry) if not ids else [registry.get(name.strip()) for name in ids.split(",") if name.strip()]
    except (ModuleLoadError, KeyError) as exc:
        raise click.ClickException(str(exc).strip('"')) from None


def _kafka_call(coroutine):
    """Run a replay step; a refusal or a Kafka error becomes a clear message."""
    from aiokafka.errors import KafkaError

    from lo_stream.replay import ReplayRefused

    try:
        return asyncio.run(coroutine)
    except ReplayRefused as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaError as exc:
        raise click.ClickException(f"Kafka: {exc} (is the broker at {_settings().broker} up?)") from None


#: A replay or build whose worker commits nothing for this long says so, with the worker's log.
STALL_WARNING_S = 60.0


def _follow(settings: Settings, plan, description: str, env: dict[str, str], until_caught_up: bool) -> tuple[int, float]:
    """Run a worker (`env` on top of the settings) and show `plan`'s progress until it reaches its end
    offsets; then stop it, or keep it following new events until Ctrl-C. Returns (records, seconds)."""
    import socket

    from lo_stream.replay import Deployment

    with socket.socket() as probe:
        probe.bind((settings.bind_host, 0))
        port = probe.getsockname()[1]
    log_path = settings.data_dir / f"{plan.group}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **settings.as_env(), "LO_STREAM_WORKER_PORT": str(port), **env}
    with log_path.open("ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "lo_stream", "worker"], env=child_env, stdout=log, stderr=log)

    async def committed() -> dict[int, int]:
        async with Deployment(settings) as kafka:
            return await kafka.committed(plan.group)

    def log_tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # through the finally below: the worker is stopped too

    previous_handler = signal.signal(signal.SIGTERM, terminated)
    started, done = time.monotonic(), 0
    moved, warned = started, False
    try:
        with _progress_bar("records") as progress:
            task = progress.add_task(description, total=plan.total, rate=0.0)
            while done < plan.total:
                if child.poll() is not None:
                    raise click.ClickException(f"the worker exited with code {child.returncode}; its log ({log_path}):\n{log_tail()}")
                time.sleep(1.0)
                done, before = plan.done(asyncio.run(committed())), done
                if done != before:
                    moved, warned = time.monotonic(), False
                elif not warned and time.monotonic() - moved > STALL_WARNING_S:
                    warned = True
                    click.echo(f"no progress for {STALL_WARNING_S:g}s ({done} of {plan.total} records); still waiting. "
                               f"The worker's log ({log_path}) ends with:\n{log_tail()}", err=True)
                progress.update(task, completed=done, rate=done / max(time.monotonic() - started, 1e-6))
        seconds = time.monotonic() - started
        if not until_caught_up:
            click.echo("caught up; following new events (Ctrl-C stops, and a later run resumes) ...", err=True)
            while child.poll() is None:
                time.sleep(1.0)
        return done, seconds
    except KeyboardInterrupt:
        return done, time.monotonic() - started
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the worker commits and leaves its group
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
        signal.signal(signal.SIGTERM, previous_handler)


@cli.command()
@click.option("--from", "since", default="earliest", show_default=True,
              help="Where to start: earliest, or an ISO date/time (events stored since then; local time without a zone).")
@click.option("--reducers", "reducer_ids", default=None, help="Comma-separated reducer ids (default: every installed reducer).")
@click.option("--as-version", type=click.IntRange(min=1), default=None,
              help="Build the (one) reducer's current code as this version beside the serving one (blue/green).")
@click.option("--keep-following", is_flag=True, help="With --as-version: once caught up, keep the build following new events.")
def replay(since: str, reducer_ids: str | None, as_version: int | None, keep_following: bool) -> None:
    """Rebuild reducers' tables from the events topic.

    In place (the default): the workers must be stopped; the named reducers' tables are cleared,
    the workers' consumer group is rewound (to the start, or to --from), and a worker started here
    rebuilds them; the other reducers' tables are untouched. With --from a time, the rebuilt
    tables hold what the events since then give.

    With --as-version N: the reducer's current code is built as version N by a build lane of its
    own while the workers keep serving the old version; then lo-stream promote REDUCER N.
    """
    import dataclasses

    from lo_stream.replay import rewind, start_build

    settings = _settings()
    _ensure_topics(settings)
    when = _when(since)
    reducers = _installed_reducers(reducer_ids)
    if as_version is None:
        plan, cleared = _kafka_call(rewind(settings, reducers, when))
        click.echo(f"cleared {cleared} keys of {', '.join(r.table_name for r in reducers)}; "
                   f"rewound {plan.group} to {since}: {plan.total} records to replay", err=True)
        records, seconds = _follow(settings, plan, "replaying", {}, until_caught_up=True)
        click.echo(f"replayed {records} records in {seconds:.1f}s ({records / max(seconds, 1e-6):.0f}/s): "
                   f"{', '.join(r.table_name for r in reducers)} rebuilt; start the workers again")
        return
    if len(reducers) != 1:
        raise click.ClickException("--as-version builds one reducer: give it with --reducers ID")
    reducer = dataclasses.replace(reducers[0], version=as_version)
    plan = _kafka_call(start_build(settings, reducer, when))
    env = {"LO_STREAM_BUILD_LANE": f"{reducer.id}@{as_version}"}
    records, seconds = _follow(settings, plan, f"building {reducer.table_name}", env, until_caught_up=not keep_following)
    click.echo(f"{reducer.table_name}: {records} records in {seconds:.1f}s; the workers still serve the old version. "
               f"When ready: stop the workers, lo-stream promote {reducer.id} {as_version}, start them with this code")


@cli.command()
@click.argument("reducer_id")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--max-lag", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Refuse while the new version is more records than this behind the events topic.")
def promote(reducer_id: str, version: int, max_lag: int) -> None:
    """Make VERSION of a reducer the one that serves (after lo-stream replay --as-version VERSION).

    The workers must be stopped; start them afterwards with the code of that version."""
    from lo_stream.replay import promote as promote_version

    settings = _settings()
    (reducer,) = _installed_reducers(reducer_id)
    handover = _kafka_call(promote_version(settings, reducer, version, max_lag))
    click.echo(f"{reducer_id} v{version} now serves; the workers resume at {handover} and skip what it already holds. "
               f"Start them with the code of version {version}.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def versions(as_json: bool) -> None:
    """Each installed reducer's code version, serving version, and every version's lag."""
    import json

    from lo_stream.replay import version_report

    settings = _settings()
    _ensure_topics(settings)
    report = _kafka_call(version_report(settings, _installed_reducers(None)))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return

    def lag(value: int | None) -> str:
        return "not started" if value is None else f"lag {value}"

    for row in report:
        workers = row["workers"]
        click.echo(f"{row['reducer']}: code v{row['code']}, serving v{row['serving'] or '-'} "
                   f"(workers {'running' if workers['running'] else 'stopped'}, {lag(workers['lag'])})")
        for build in row["builds"]:
            click.echo(f"    build v{build['version']}: {'running' if build['running'] else 'stopped'}, {lag(build['lag'])}")


@cli.command("drop-version")
@click.argument("reducer_id")
@click.argument("version", type=click.IntRange(min=1))
def drop_version_command(reducer_id: str, version: int) -> None:
    """Delete the table (changelog topic) of a reducer version that no longer serves."""
    from lo_stream.replay import drop_version

    settings = _settings()
    (reducer,) = _installed_reducers(reducer_id)
    dropped = _kafka_call(drop_version(settings, reducer, version))
    click.echo(f"deleted {', '.join(dropped)}" if dropped else f"{reducer_id} v{version} has no topics left")


@cli.command("state-at")
@click.argument("reducer_id")
@click.option("--student", required=True, help="The student's key (metadata.auth.safe_user_id).")
@click.option("--at", "at", required=True, help="An ISO date/time (local time without a zone).")
def state_at_command(reducer_id: str, student: str, at: str) -> None:
    """A student's state in a reducer as of a past time, recomputed from their events (tables untouched)."""
    import json

    from lo_stream.replay import state_at

    settings = _settings()
    when = _when(at)
    if when is None:
        raise click.BadParameter("give a date/time, not 'earliest'", param_hint="--at")
    (reducer,) = _installed_reducers(reducer_id)
    click.echo(json.dumps(_kafka_call(state_at(settings, reducer, student, when)), indent=2, ensure_ascii=False))


# -- the dashboards ------------------------------------------------------------------------


@cli.command()
@click.option("--port", type=int, default=None, help="Port (default: LO_STREAM_DASHBOARD_PORT, 5006).")
def dashboard(port: int | None) -> None:
    """Serve the teacher dashboards (sign in with a name and password from lo-stream users)."""
    from lo_stream.dashboards.server import serve_dashboards
    from lo_stream.modules import ModuleLoadError, load_modules

    settings = _settings(dashboard_port=port)
    try:
        installed = load_modules()
    except ModuleLoadError as exc:
        raise click.ClickException(str(exc)) from None
    base = f"http://{settings.bind_host}:{settings.dashboard_port}"

    def announce(pages: list[str]) -> None:
        click.echo(f"dashboards (query layer: {settings.query_url}):")
        for name in pages:
            click.echo(f"  {base}/{name}")

    serve_dashboards(settings, installed, announce=announce)


# -- everything at once --------------------------------------------------------------------


DEV_TEACHER = "teacher"


@cli.command()
@click.option("--secure", is_flag=True, help="No development identity, no simulated class, no dev login.")
@click.option("--students", type=click.IntRange(min=0), default=10, show_default=True,
              help="Students in the simulated class (0: none).")
def run(secure: bool, students: int) -> None:
    """Bring up a development deployment: Kafka (unless a broker is configured), a worker (with the
    query API), the gateway, the dashboards and a simulated class typing through the gateway.

    Development mode (the default) switches the gateway's insecure identity on, and makes a dev
    teacher with a fresh password. Stops what it started on Ctrl-C, or when one of its processes exits.
    """
    import secrets

    from lo_stream.connectors.exceptions import LocalKafkaError
    from lo_stream.connectors.local_kafka import LocalKafka
    from lo_stream.query.access import UserStore

    settings = _settings()
    broker = None
    if settings.embedded_broker:
        broker = LocalKafka(settings)
        click.echo(f"starting Kafka in {broker.data_dir} (first start fetches its jars with Maven) ...")
        try:
            click.echo(broker.start().describe())
        except LocalKafkaError as exc:
            raise click.ClickException(str(exc)) from None
    _ensure_topics(settings)
    commands = {"worker": ["worker"], "gateway": ["gateway"], "dashboard": ["dashboard"]}
    password = None
    if not secure:
        commands["gateway"].append("--insecure-identity")
        if students:
            commands["simulator"] = ["simulate", "--students", str(students), "--teacher", DEV_TEACHER]
        users = UserStore(settings.users_file)
        users.revoke(DEV_TEACHER)
        password = secrets.token_urlsafe(9)
        users.add(DEV_TEACHER, "teacher", password=password)
        click.secho(
            "DEVELOPMENT MODE: the gateway accepts test_framework_fake_identity, so anyone who can reach "
            f"{settings.bind_host}:{settings.gateway_port} can send events as any student (--secure turns it off).",
            fg="red", bold=True, err=True,
        )
    click.echo(f"starting {', '.join(commands)} on {settings.broker} (topics under '{settings.topic_prefix}.') ...")

    def stop_signal(signum: int, _frame: object) -> None:
        raise _Stopped(signal.Signals(signum).name)

    # Ctrl-C and SIGTERM alike (SIGINT too where a shell started us with it ignored, in the background).
    previous = {signum: signal.signal(signum, stop_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, subprocess.Popen] = {}
    exit_code = 0
    try:
        for name, args in commands.items():
            children[name] = subprocess.Popen([sys.executable, "-m", "lo_stream", *args])
        login = f"sign in as {DEV_TEACHER} / {password}" if password else "sign in as a user of lo-stream users"
        click.secho(f"dashboard: http://{settings.bind_host}:{settings.dashboard_port}/overview  ({login})", bold=True)
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        exited = next(name for name, child in children.items() if child.poll() is not None)
        exit_code = children[exited].returncode or 0
        click.echo(f"the {exited} exited with code {exit_code}: stopping the rest", err=True)
    except _Stopped as stopped:
        click.echo(f"{stopped}: stopping {', '.join(children)}{' and Kafka' if broker else ''} ...", err=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        _stop_children(children)
        if broker is not None:
            click.echo("stopping Kafka ...")
            broker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    sys.exit(exit_code)


class _Stopped(Exception):
    """`lo-stream run` was told to stop (the signal's name)."""


CHILD_STOP_TIMEOUT_S = 60.0  # a worker commits and leaves its group; then it is killed


def _stop_children(children: dict[str, subprocess.Popen]) -> None:
    """SIGTERM each child still running (the worker commits and leaves its group, the gateway
    closes its connections), wait for them, and kill what is still running after the timeout."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
    for name, child in children.items():
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            click.echo(f"the {name} did not stop within {CHILD_STOP_TIMEOUT_S:g}s of SIGTERM: killing it", err=True)
            child.kill()
            child.wait()


def main() -> None:
    cli(prog_name="lo-stream")
