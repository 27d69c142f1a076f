"""A single-node Apache Kafka broker for development and tests, run from Kafka's own jars.

`LocalKafka` is what ``lo-stream kafka start|status|stop`` drives. Its responsibilities:

1. fetch the broker's jars from Maven Central with Maven, once, into a cache outside the
   repository (``<cache_dir>/kafka-<version>/libs``), so later starts are instant;
2. write the broker's config and format its KRaft storage directory (first start only);
3. start one process that is both controller and broker, bound to 127.0.0.1, and wait until a
   client gets metadata from it;
4. tell whether it runs and where its log is, and stop it (SIGTERM, wait, then SIGKILL).

Example::

    kafka = LocalKafka(load_settings(kafka_port=19092))
    status = kafka.start()      # fetches jars on the first call
    print(status.bootstrap)     # 127.0.0.1:19092
    kafka.stop()
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from lo_stream.connectors.exceptions import (
    BrokerStartError,
    JavaNotFoundError,
    KafkaDownloadError,
    MavenNotFoundError,
    PortInUseError,
)
from lo_stream.settings import Settings

__all__ = ["BrokerStatus", "LocalKafka", "MIN_JAVA"]

MIN_JAVA = 17
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 25
DOCKER_HINT = (
    "or run Kafka with Docker (docker compose -f docker-compose.kafka.yml up -d) "
    "and point lo_stream at it with LO_STREAM_BROKER=127.0.0.1:9092"
)


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    bootstrap: str
    pid: int | None
    data_dir: Path
    log_file: Path

    def describe(self) -> str:
        if self.running:
            return f"Kafka is running (pid {self.pid}) at {self.bootstrap}; log: {self.log_file}"
        return f"Kafka is not running (data dir {self.data_dir}); log: {self.log_file}"


class LocalKafka:
    """One embedded broker, identified by its data directory."""

    def __init__(self, settings: Settings, data_dir: Path | None = None) -> None:
        self.settings = settings
        self.data_dir = (data_dir or settings.data_dir / "kafka").expanduser().resolve()
        self.port = settings.kafka_port
        self.controller_port = settings.kafka_controller_port
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_file = self.data_dir / "kafka.log"
        self.libs_dir = settings.cache_dir.expanduser() / f"kafka-{settings.kafka_version}" / "libs"
        self._state_file = self.data_dir / "broker.json"
        self._config_file = self.data_dir / "server.properties"
        self._log_dirs = self.data_dir / "logs"

    # -- what users call ------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        state = self._read_state()
        pid = state.get("pid")
        running = pid is not None and _is_our_broker(pid, self._config_file)
        bootstrap = state.get("bootstrap", self.bootstrap) if running else self.bootstrap
        return BrokerStatus(running, bootstrap, pid if running else None, self.data_dir, self.log_file)

    def start(self) -> BrokerStatus:
        """Start the broker unless it already runs; return once a client gets metadata."""
        current = self.status()
        if current.running:
            return current
        java = find_java()
        libs = self.fetch_jars()
        for port in (self.port, self.controller_port):
            _check_port_free(port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._config_file.write_text(self._server_properties())
        if not (self._log_dirs / "meta.properties").exists():
            self._format_storage(java, libs)
        process = self._launch(java, libs)
        self._state_file.write_text(json.dumps({"pid": process.pid, "bootstrap": self.bootstrap}))
        try:
            self._wait_until_ready(process)
        except BrokerStartError:
            _terminate(process.pid, timeout=5)
            process.wait()
            self._state_file.unlink(missing_ok=True)
            raise
        return self.status()

    def stop(self) -> bool:
        """Stop the broker; return False when none was running."""
        current = self.status()
        if current.running:
            _terminate(current.pid, timeout=STOP_TIMEOUT)
        self._state_file.unlink(missing_ok=True)
        return current.running

    def delete_data(self) -> None:
        """Delete every topic's data of a stopped broker (its log and settings stay); the next
        `start` formats empty storage."""
        if self.status().running:
            raise RuntimeError(f"stop the broker of {self.data_dir} before deleting its data")
        shutil.rmtree(self._log_dirs, ignore_errors=True)

    def fetch_jars(self) -> Path:
        """Return the directory of the broker's jars, fetching them with Maven the first time."""
        complete = self.libs_dir / ".complete"
        if complete.exists():
            return self.libs_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MavenNotFoundError(
                "Maven (mvn) is not on PATH; lo_stream fetches Apache Kafka's jars from Maven Central with it. "
                f"Install Maven (Debian/Ubuntu: apt-get install maven; macOS: brew install maven), {DOCKER_HINT}."
            )
        partial = self.libs_dir.with_name(f"libs.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        with resources.as_file(resources.files("lo_stream.connectors") / "kafka_dist" / "pom.xml") as pom:
            command = [
                mvn, "-B", "-q", "-f", str(pom),
                f"-Dkafka.version={self.settings.kafka_version}",
                "dependency:copy-dependencies", f"-DoutputDirectory={partial}", "-DincludeScope=runtime",
            ]
            result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not any(partial.glob("kafka_*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            output = _tail((result.stdout + result.stderr).splitlines())
            raise KafkaDownloadError(
                f"could not fetch Apache Kafka {self.settings.kafka_version} from Maven Central with Maven "
                f"(exit code {result.returncode}). Check the network and any proxy in ~/.m2/settings.xml, "
                f"and that LO_STREAM_KAFKA_VERSION names a released Kafka; {DOCKER_HINT}.\nMaven said:\n{output}"
            )
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        partial.rename(self.libs_dir)
        complete.write_text("\n".join(sorted(jar.name for jar in self.libs_dir.glob("*.jar"))))
        return self.libs_dir

    # -- the steps ------------------------------------------------------------------------

    def _server_properties(self) -> str:
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._log_dirs),
            # A single node: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # lo_stream creates its topics with the partition counts tables need.
            "auto.create.topics.enable": "false",
        }
        return "".join(f"{key}={value}\n" for key, value in config.items())

    def _java_command(self, java: str, libs: Path, main_class: str, *args: str) -> list[str]:
        return [java, "-cp", f"{libs}/*", main_class, *args]

    def _format_storage(self, java: str, libs: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        command = self._java_command(
            # "=": an id may start with "-", which would otherwise read as an option.
            java, libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self._config_file)
        )
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerStartError(
                f"could not format Kafka's storage in {self._log_dirs} (exit code {result.returncode}); "
                f"delete that directory or pick another --data-dir.\n{_tail((result.stdout + result.stderr).splitlines())}"
            )

    def _launch(self, java: str, libs: Path) -> subprocess.Popen:
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_name("kafka.log.1"))
        with resources.as_file(resources.files("lo_stream.connectors") / "kafka_dist" / "log4j2.xml") as log4j:
            java_options = [
                f"-Xmx{self.settings.kafka_heap}", f"-Xms{self.settings.kafka_heap}",
                "-XX:+UseG1GC", "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
            ]
        command = self._java_command(java, libs, "kafka.Kafka", str(self._config_file))
        command[1:1] = java_options
        with open(self.log_file, "ab") as log:
            # A new session: the broker outlives `lo-stream kafka start` and ignores its Ctrl-C.
            return subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.data_dir, start_new_session=True,
            )

    def _wait_until_ready(self, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.settings.kafka_start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerStartError(
                    f"Kafka exited with code {process.returncode} while starting; its log says why. If its data "
                    f"is damaged, delete {self.data_dir} or pass another --data-dir. "
                    f"Last lines of {self.log_file}:\n{self._log_tail()}"
                )
            if asyncio.run(_answers_metadata(self.bootstrap)):
                return
            time.sleep(0.5)
        raise BrokerStartError(
            f"Kafka did not answer at {self.bootstrap} within {self.settings.kafka_start_timeout:.0f}s; "
            "it was stopped. Raise LO_STREAM_KAFKA_START_TIMEOUT on a slow machine, or read its log. "
            f"Last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace").splitlines())
        except FileNotFoundError:
            return "(no log was written)"

    def _read_state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}


def find_java() -> str:
    """Return the java executable (``$JAVA_HOME/bin/java`` or ``java`` on PATH), version >= 17."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no java on PATH"
        raise JavaNotFoundError(
            f"Java {MIN_JAVA}+ is needed to run Kafka and was not found ({where}). "
            f"Install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17), "
            f"{DOCKER_HINT}."
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        raise JavaNotFoundError(f"could not tell the version of {java} from `java -version`; install Java {MIN_JAVA}+.")
    major = int(match.group(2) if match.group(1) == "1" else match.group(1))
    if major < MIN_JAVA:
        raise JavaNotFoundError(
            f"{java} is Java {major}; Kafka needs Java {MIN_JAVA} or newer. Install a newer JDK and put it "
            f"first on PATH or set JAVA_HOME to it, {DOCKER_HINT}."
        )
    return java


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Kafka sets SO_REUSEADDR too, so sockets in TIME_WAIT do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUseError(
                f"port {port} on 127.0.0.1 is in use (another Kafka?). Stop what uses it, or choose other ports: "
                "lo-stream kafka start --port N (the controller takes N+1, or LO_STREAM_KAFKA_CONTROLLER_PORT)."
            ) from None


async def _answers_metadata(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    with _quiet("aiokafka"):
        try:
            await client.bootstrap()
            return bool(client.cluster.brokers())
        except (KafkaError, OSError):
            return False
        finally:
            await client.close()


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hide a library's connection errors while we poll a broker that is still starting."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_our_broker(pid: int, config_file: Path) -> bool:
    """True if `pid` is alive and is the broker started with `config_file` (pids get reused)."""
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # no procfs (macOS): trust the pid file
        return True
    try:
        return str(config_file).encode() in cmdline.read_bytes()
    except OSError:
        return False


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _tail(lines: list[str], count: int = LOG_TAIL_LINES) -> str:
    return "\n".join(lines[-count:]) or "(empty)"

