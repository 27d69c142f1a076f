"""The workshop reducer as a Kafka Streams (Java) app, with RocksDB state and its changelog topic.

    python bench/kstreams_app.py --broker HOST:PORT --topic T --group G --state-dir DIR \
        [--guarantee at-least-once|exactly-once] [--commit-interval 1]

The app is the Maven project bench/kstreams/ (KStreamsWorkshop.java says what it does). This
launcher builds its jar when it is missing or older than the sources (`build`: bench.throughput
calls it before the timed run, so the build is never measured), checks the arguments, then
replaces itself with ``java -jar bench/kstreams/target/kstreams-workshop.jar`` and the same
arguments (os.execv: the same pid, so the harness samples the JVM's CPU and memory, and its
SIGTERM reaches the JVM, whose shutdown hook closes the Streams client). Needs java 17+ on PATH,
and mvn to build. Runs until SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import competitor_parser  # noqa: E402

__all__ = ["JAR", "build", "unavailable", "versions"]

PROJECT = Path(__file__).resolve().parent / "kstreams"
JAR = PROJECT / "target" / "kstreams-workshop.jar"
MIN_JAVA = 17


def java_version() -> str | None:
    """The version of `java` on PATH (e.g. ``17.0.15``), or None without one."""
    java = shutil.which("java")
    if java is None:
        return None
    # `java -version` writes e.g. `openjdk version "17.0.15" 2025-04-15` to stderr.
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    found = re.search(r'version "([^"]+)"', shown)
    return found.group(1) if found else None


def _major(version: str) -> int:
    """17 for ``17.0.15``, 8 for ``1.8.0_392``."""
    parts = [int(part) for part in re.findall(r"\d+", version)[:2]] or [0]
    return parts[1] if parts[0] == 1 and len(parts) > 1 else parts[0]


def _stale() -> bool:
    """Whether the jar is missing or older than pom.xml or a file under src/."""
    if not JAR.exists():
        return True
    sources = [PROJECT / "pom.xml", *(path for path in (PROJECT / "src").rglob("*") if path.is_file())]
    return max(path.stat().st_mtime for path in sources) > JAR.stat().st_mtime


def unavailable() -> str | None:
    """Why the app cannot run here (no java 17+; or the jar needs a build and there is no mvn), or None."""
    version = java_version()
    if version is None:
        return "no java on PATH (Kafka Streams needs Java 17+)"
    if _major(version) < MIN_JAVA:
        return f"java on PATH is {version}; the Kafka Streams app needs Java {MIN_JAVA}+"
    if _stale() and shutil.which("mvn") is None:
        return f"no mvn on PATH to build {JAR.relative_to(PROJECT.parents[1])} (Maven, with Maven Central reachable)"
    return None


def build() -> Path:
    """The jar, built first with ``mvn -q package`` if it is missing or older than its sources."""
    if _stale():
        print(f"building {JAR.name} (mvn package) ...", file=sys.stderr, flush=True)
        built = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(PROJECT / "pom.xml"), "package"],
            capture_output=True, text=True, check=False,
        )
        if built.returncode != 0 or not JAR.exists():
            output = (built.stdout + built.stderr).strip().splitlines()
            raise RuntimeError(f"mvn package failed in {PROJECT} (exit {built.returncode}):\n" + "\n".join(output[-40:]))
        JAR.touch()  # newer than the sources even if Maven reused its output
    return JAR


def versions() -> dict[str, str | None]:
    """Kafka Streams (from pom.xml) and Java versions, for the result files."""
    pom = (PROJECT / "pom.xml").read_text()
    kafka = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    return {"kafka-streams": kafka.group(1) if kafka else None, "java": java_version()}


def main() -> None:
    parser = competitor_parser(__doc__.split("\n")[0])
    parser.add_argument("--guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once")
    args = parser.parse_args()
    # No `java -version` here: the harness checked `unavailable()` before timing, and a JVM started
    # for it would count in this competitor's CPU time.
    java = shutil.which("java")
    if java is None:
        sys.exit("kstreams_app: no java on PATH (Kafka Streams needs Java 17+)")
    jar = build()
    command = [
        java, "-jar", str(jar), "--broker", args.broker, "--topic", args.topic, "--group", args.group,
        "--state-dir", str(args.state_dir), "--commit-interval", str(args.commit_interval),
        "--guarantee", args.guarantee,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(java, command)


if __name__ == "__main__":
    main()
