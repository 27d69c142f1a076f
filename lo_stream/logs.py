"""Logging for lo_stream's processes: one format, repeats held back, no secrets in access logs.

A broker outage makes Kafka clients log the same error on every reconnect attempt, hundreds of
times a second. `RepeatFilter` lets the first record of a kind through, then at most one per
interval, which says how long the run has lasted and how many like it were held back::

    ERROR aiokafka: Unable connect to node with id 1: [Errno 111] Connect call failed
    ERROR aiokafka: Unable connect to node with id 1: ... (repeated for 10 s, 1,532 like it held back)

Records are "of a kind" when they come from the same logger and place with the same message
template (the format string, before its arguments); a kind not seen for an interval starts a
new run. Only other libraries' warnings and errors are held back.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Callable

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

__all__ = ["REPEAT_INTERVAL_S", "RedactingAccessLogger", "RepeatFilter", "configure", "redact_query"]

REPEAT_INTERVAL_S = 10.0
OWN_LOGGERS = {"lo_stream", "dashboards"}
FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"


@dataclass
class _Run:
    started: float  # the first record of the run
    reported: float  # the last record let through
    last: float  # the last record, let through or held
    held: int = 0  # held since the last report


class RepeatFilter(logging.Filter):
    """Hold back repeats of a record kind: the first passes, then one per `interval` with a count.

    Only warnings and errors of other libraries (where reconnect storms come from) are held back:
    lo_stream's own lines are already one per event worth knowing, and access logs are one per
    request on purpose."""

    def __init__(self, interval: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.runs: dict[tuple, _Run] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS:
            return True
        kind = (record.name, record.levelno, record.pathname, record.lineno, str(record.msg))
        now = self.clock()
        run = self.runs.get(kind)
        if run is None or now - run.last > self.interval:  # a new run
            self._forget_old(now)
            self.runs[kind] = _Run(started=now, reported=now, last=now)
            return True
        run.last = now
        if now - run.reported < self.interval:
            run.held += 1
            return False
        record.msg = f"{record.msg} (repeated for {now - run.started:.0f} s, {run.held:,} like it held back)"
        run.reported, run.held = now, 0
        return True

    def _forget_old(self, now: float) -> None:
        if len(self.runs) > 1000:
            self.runs = {kind: run for kind, run in self.runs.items() if now - run.last <= self.interval}


def configure(level: int | str = logging.INFO) -> None:
    """The format every lo_stream process logs in, repeats held back, aiokafka's notices quiet."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its per-request notices are noise


_SECRET_PARAMETER = re.compile(r"(?i)([?&;](?:token|access_token|auth_token|password|secret)=)[^&;#]*")


def redact_query(path: str) -> str:
    """A request's path and query with the values of secret-bearing parameters masked.

    >>> redact_query("/wsapi/in/?token=s3cret&x=1"), redact_query("/wsapi/query?a=1&Token=t")
    ('/wsapi/in/?token=<redacted>&x=1', '/wsapi/query?a=1&Token=<redacted>')
    """
    return _SECRET_PARAMETER.sub(r"\1<redacted>", path)


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log, one line per request, with tokens in the query string masked (clients
    may pass their token as ``?token=``, and logs are read by more people than tokens should be)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"', request.remote, request.method,
                         redact_query(request.path_qs), *request.version, response.status,
                         response.body_length, time, request.headers.get("User-Agent", "-"))
