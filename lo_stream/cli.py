"""The ``lo-stream`` command (also ``python -m lo_stream``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from lo_stream.settings import SETTINGS_FILE_ENV, Settings, SettingsError, load_settings

__all__ = ["main"]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"TOML settings file (same as {SETTINGS_FILE_ENV}).",
)
def cli(settings_file: Path | None) -> None:
    """lo_stream: learning analytics on Kafka, Faust and Panel."""
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
    """Run a Faust worker: consume events, run the agents, keep the tables."""
    from faust import Worker

    from lo_stream.modules import ModuleLoadError
    from lo_stream.reducers import ReducerDefinitionError
    from lo_stream.topics import TopicMismatchError, ensure_topics

    settings = _settings()
    try:
        asyncio.run(ensure_topics(settings))
        from lo_stream.app import app
    except (TopicMismatchError, ModuleLoadError, ReducerDefinitionError) as exc:
        raise click.ClickException(str(exc)) from None

    try:
        Worker(app, loglevel=loglevel).execute_from_commandline()
    except SystemExit as done:
        exit_code = done.code if isinstance(done.code, int) else 1
    else:
        exit_code = 0
    # Faust has stopped every service (tables closed, offsets committed) by now. Under
    # exactly-once a leftover non-daemon thread was seen keeping the stopped process alive at
    # interpreter exit, so leave without waiting for it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


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
    from lo_stream.topics import TopicMismatchError, ensure_topics

    settings = _settings(gateway_port=port, gateway_insecure_identity=insecure_identity)
    try:
        asyncio.run(ensure_topics(settings))
    except TopicMismatchError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(
        Gateway(settings).app(),
        host=settings.bind_host,
        port=settings.gateway_port,
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


# -- everything at once --------------------------------------------------------------------


@cli.command()
def run() -> None:
    """Bring up a development deployment: Kafka (unless a broker is configured) and a worker.

    Stops what it started on Ctrl-C.
    """
    from lo_stream.connectors.exceptions import LocalKafkaError
    from lo_stream.connectors.local_kafka import LocalKafka

    settings = _settings()
    broker = None
    if settings.embedded_broker:
        broker = LocalKafka(settings)
        click.echo(f"starting Kafka in {broker.data_dir} (first start fetches its jars with Maven) ...")
        try:
            click.echo(broker.start().describe())
        except LocalKafkaError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"starting the worker on {settings.broker} (topics under '{settings.topic_prefix}.') ...")
    worker_process = subprocess.Popen([sys.executable, "-m", "lo_stream", "worker"])
    try:
        worker_process.wait()
    except KeyboardInterrupt:
        worker_process.send_signal(signal.SIGINT)
        worker_process.wait()
    finally:
        if broker is not None:
            click.echo("stopping Kafka ...")
            broker.stop()
    sys.exit(worker_process.returncode or 0)


def main() -> None:
    cli(prog_name="lo-stream")
