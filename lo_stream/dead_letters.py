"""Dead letters: what lo_stream could not use, with the reason, so that nothing is silently lost.

Every record on the dead-letter topic is a JSON object::

    {"reason": "...", "stage": "worker", "time": 1795548204.5, "raw": "<the input as text>",
     "reducer": "<reducer id, when a reducer failed>", "error": "<exception>", ...context}
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

__all__ = ["dead_letter_record"]


def dead_letter_record(reason: str, raw: bytes | str | dict | list | None, *, stage: str, **context: Any) -> bytes:
    """Encode one dead letter. `raw` is kept as text when it is UTF-8, else as base64.

    >>> orjson.loads(dead_letter_record("not JSON", b"{oops", stage="worker", offset=7))["raw"]
    '{oops'
    """
    record: dict[str, Any] = {"reason": reason, "stage": stage, "time": time.time()}
    if isinstance(raw, bytes):
        try:
            record["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            record["raw_base64"] = base64.b64encode(raw).decode("ascii")
    else:
        record["raw"] = raw
    record.update({name: value for name, value in context.items() if value is not None})
    return orjson.dumps(record, default=str)
