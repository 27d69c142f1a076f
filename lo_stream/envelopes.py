"""The event envelope (Learning-Observer-compatible) as the worker reads it from Kafka.

    {"client": {<the event as sent: event, source, timestamp (ms), doc_id, ...>},
     "server": {"time": <epoch seconds>, ...},
     "metadata": {"auth": {"user_id", "safe_user_id", "providence"}, ...}}

A message on the events topic holds one envelope, or a JSON list of envelopes of the same
student (producers batch to cut per-message cost). The message key is the student's
``safe_user_id``.
"""

from __future__ import annotations

import orjson

__all__ = ["MalformedEventError", "decode_envelopes", "student_of"]


class MalformedEventError(ValueError):
    """A message on the events topic that is not an envelope (or a list of them) for its key."""


def student_of(envelope: dict) -> object:
    auth = envelope.get("metadata", {}).get("auth") if isinstance(envelope.get("metadata"), dict) else None
    return auth.get("safe_user_id") if isinstance(auth, dict) else None


def decode_envelopes(value: bytes, key: str | None) -> list[dict]:
    """Parse a message into its envelopes, checking each is for the student the message is keyed by."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(f"not JSON: {exc}") from None
    envelopes = decoded if isinstance(decoded, list) else [decoded]
    if not envelopes:
        raise MalformedEventError("an empty list of envelopes")
    for position, envelope in enumerate(envelopes):
        where = f"envelope {position}" if isinstance(decoded, list) else "the envelope"
        if not isinstance(envelope, dict):
            raise MalformedEventError(f"{where} is a JSON {type(envelope).__name__}, not an object")
        if not isinstance(envelope.get("client"), dict):
            raise MalformedEventError(f"{where} has no 'client' object (the event as sent)")
        student = student_of(envelope)
        if not isinstance(student, str) or not student:
            raise MalformedEventError(f"{where} has no metadata.auth.safe_user_id")
        if student != key:
            raise MalformedEventError(
                f"{where} is for student {student!r} but the message is keyed {key!r}: "
                "key events by metadata.auth.safe_user_id"
            )
    return envelopes
