"""The event envelope (Learning-Observer-compatible) as the worker reads it from Kafka.

    {"client": {<the event as sent: event, source, timestamp (ms), doc_id, ...>},
     "server": {"time": <epoch seconds>, ...},
     "metadata": {"auth": {"user_id", "safe_user_id", "providence"}, ...}}

A message on the events topic holds one envelope, or a JSON list of envelopes of the same
student (producers batch to cut per-message cost). The message key is the student's
``safe_user_id``.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "GOOGLE_DOC_URL",
    "TEST_CASE_PROVIDENCE",
    "BadLine",
    "Identity",
    "MalformedEventError",
    "check_envelope",
    "client_problem",
    "decode_envelopes",
    "encode_id",
    "encode_message",
    "make_envelope",
    "parse_log_line",
    "safe_user_id",
    "student_of",
    "with_doc_id",
]


def safe_user_id(user_id: str) -> str:
    """The key of a user in topics and tables: URL-quoted, e-mail addresses kept readable.

    >>> safe_user_id("ana lima"), safe_user_id("ana@school.org")
    ('ana+lima', 'ana@school.org')
    """
    return urllib.parse.quote_plus(user_id, safe="@")


def encode_id(providence: str, user_id: str) -> str:
    """Learning Observer's ``encode_id``: the key of a user whose id comes from `providence`, so
    that ids from different sources never collide.

    >>> encode_id("tc", "testcase-ana lima")
    'tc-testcase-ana+lima'
    """
    return f"{providence}-{safe_user_id(user_id)}"


TEST_CASE_PROVIDENCE = "tc"
"""Learning Observer's providence for its unauthenticated test identity (``testcase_auth``)."""


@dataclass(frozen=True)
class Identity:
    """Who sent an event, as ``metadata.auth`` records it.

    `providence` says how we know: ``token`` (a client token), ``tc`` (the unauthenticated test
    identity of development mode), ``log`` (a log file replayed by an operator).
    """

    user_id: str
    safe_user_id: str
    providence: str

    @classmethod
    def of(cls, user_id: str, providence: str) -> "Identity":
        return cls(user_id, safe_user_id(user_id), providence)

    @classmethod
    def test_case(cls, user_id: str) -> "Identity":
        """Learning Observer's test identity (``test_framework_fake_identity``), as LO records it,
        so that rosters made for LO's test users join unchanged.

        >>> Identity.test_case("Ana Lima")
        Identity(user_id='testcase-Ana Lima', safe_user_id='tc-testcase-Ana+Lima', providence='tc')
        """
        user_id = "testcase-" + user_id
        return cls(user_id, encode_id(TEST_CASE_PROVIDENCE, user_id), TEST_CASE_PROVIDENCE)

    def as_auth(self) -> dict[str, str]:
        return {"user_id": self.user_id, "safe_user_id": self.safe_user_id, "providence": self.providence}


GOOGLE_DOC_URL = re.compile(r"^https://docs.google.com/document/d/[^/\s]+/[a-zA-Z]+")
"""An editor's URL of a Google Doc (``.../document/d/<id>/edit``), not Docs' home page."""


def with_doc_id(event: dict) -> dict:
    """Learning Observer's common migrator: an event that names its Google Doc only as its
    ``object`` (keystrokes, visibility) gets ``doc_id`` = ``object.id``, when ``object.url`` is a
    document's URL. Reducers kept per document then see it. Changes `event` in place.

    >>> with_doc_id({"event": "keystroke", "object": {"id": "d1", "url": "https://docs.google.com/document/d/d1/edit"}})["doc_id"]
    'd1'
    """
    if event.get("doc_id"):
        return event
    thing = event.get("object")
    if isinstance(thing, dict) and isinstance(thing.get("url"), str) and GOOGLE_DOC_URL.match(thing["url"]):
        doc_id = thing.get("id")
        if isinstance(doc_id, str) and doc_id:
            event["doc_id"] = doc_id
    return event


def make_envelope(event: dict, identity: Identity, **server: Any) -> dict:
    """Wrap an event as sent by a client (with `with_doc_id`): ``server`` gets the receive time
    plus what is given."""
    return {
        "client": with_doc_id(event),
        "server": {"time": time.time(), **server},
        "metadata": {"auth": identity.as_auth()},
    }


def encode_message(envelopes: list[dict]) -> bytes:
    """The value of one events-topic message: a lone envelope, or a list of one student's."""
    return orjson.dumps(envelopes[0] if len(envelopes) == 1 else envelopes)


class MalformedEventError(ValueError):
    """A message on the events topic that is not an envelope (or a list of them) for its key."""


def student_of(envelope: dict) -> object:
    """``metadata.auth.safe_user_id`` (not checked to be a string), or None where the path is missing."""
    try:
        return envelope["metadata"]["auth"]["safe_user_id"]
    except (KeyError, TypeError, IndexError):  # a missing field, or a JSON value that is not an object
        return None


def decode_envelopes(value: bytes | None, key: str | None) -> list[dict]:
    """Parse a message into its envelopes, checking each is for the student the message is keyed by."""
    if value is None:
        raise MalformedEventError("a message without a value (a tombstone) on the events topic")
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(f"not JSON: {exc}") from None
    envelopes = decoded if isinstance(decoded, list) else [decoded]
    if not envelopes:
        raise MalformedEventError("an empty list of envelopes")
    for envelope in envelopes:  # the common case, checked cheaply; `check_envelope` says what is wrong
        try:
            client = envelope["client"]
            if type(client) is not dict or envelope["metadata"]["auth"]["safe_user_id"] != key or not key:
                break
        except (KeyError, TypeError, IndexError):
            break
        event, source = client.get("event"), client.get("source")
        if (event is not None and type(event) is not str) or (source is not None and type(source) is not str):
            break
    else:
        return envelopes
    for position, envelope in enumerate(envelopes):
        check_envelope(envelope, key, f"envelope {position}" if isinstance(decoded, list) else "the envelope")
    return envelopes


def check_envelope(envelope: Any, key: str | None = None, where: str = "the envelope") -> None:
    """Raise MalformedEventError saying what makes `envelope` unusable by reducers (for a message
    keyed `key`, when given): the worker's rules, which offline mode applies too.

    >>> check_envelope({"client": "typing", "metadata": {"auth": {"safe_user_id": "ana"}}}, where="event 3")
    Traceback (most recent call last):
    ...
    lo_stream.envelopes.MalformedEventError: event 3 has no 'client' object (the event as sent)
    """
    if not isinstance(envelope, dict):
        raise MalformedEventError(f"{where} is a JSON {type(envelope).__name__}, not an object")
    if not isinstance(envelope.get("client"), dict):
        raise MalformedEventError(f"{where} has no 'client' object (the event as sent)")
    problem = client_problem(envelope["client"])
    if problem:
        raise MalformedEventError(f"{where}: {problem}")
    student = student_of(envelope)
    if not isinstance(student, str) or not student:
        raise MalformedEventError(f"{where} has no metadata.auth.safe_user_id")
    if key is not None and student != key:
        raise MalformedEventError(
            f"{where} is for student {student!r} but the message is keyed {key!r}: "
            "key events by metadata.auth.safe_user_id"
        )


def client_problem(client: dict) -> str | None:
    """What makes an event as sent unusable by reducers, or None: `event` and `source`, when
    present, must be strings (reducers pick events by them).

    >>> client_problem({"event": ["keystroke"]})
    'client.event is a JSON array, not a string'
    """
    for name in ("event", "source"):
        value = client.get(name)
        if value is not None and not isinstance(value, str):
            kind = {dict: "object", list: "array", bool: "boolean"}.get(type(value), type(value).__name__)
            return f"client.{name} is a JSON {kind}, not a string"
    return None


class BadLine(ValueError):
    """A line of a log file that is not an event lo_stream can read."""


def parse_log_line(line: bytes, identity: Identity | None, executable: str) -> tuple[str, dict]:
    """(student key, envelope) of one line of a log file; raw events are wrapped as sent by `executable`.

    >>> parse_log_line(b'{"event": "keystroke"}', Identity.of("ana", "log"), "doctest")[0]
    'ana'
    """
    document = line.split(b"\t", 1)[0]  # .study.log: the envelope, a tab, a timestamp
    try:
        value = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadLine(f"expected a JSON object, found a JSON {type(value).__name__}")
    if "client" in value:
        if not isinstance(value["client"], dict):
            raise BadLine('"client" must be an object (the event as sent)')
        problem = client_problem(value["client"])
        if problem:
            raise BadLine(problem)
        student = student_of(value)
        if not isinstance(student, str) or not student:
            raise BadLine("an envelope without metadata.auth.safe_user_id: whose events are these?")
        with_doc_id(value["client"])
        return student, value
    if not isinstance(value.get("event"), str):
        raise BadLine('neither an envelope (no "client") nor an event (no "event" string)')
    problem = client_problem(value)
    if problem:
        raise BadLine(problem)
    if identity is None:
        raise BadLine("a raw event, not an envelope: say whose it is with --user")
    return identity.safe_user_id, make_envelope(value, identity, executable=executable)
