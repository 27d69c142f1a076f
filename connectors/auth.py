"""Who may send events: per-client tokens, kept hashed in a JSON file.

A token is handed to one client (a student's browser extension, a school's batch uploader) and
names the user its events belong to. The file stores only each token's SHA-256: tokens are 32
random bytes, so a fast hash is enough and a leaked file gives nothing away. The gateway
re-reads the file when it changes, so `lo-stream tokens add` takes effect without a restart.

    {"tokens": [{"name": "ana-laptop", "user_id": "ana@school.org", "sha256": "9f2c...",
                 "created": "2026-11-24T10:00:00+00:00"}]}

`SecretFile` is the shared part (also used for the query layer's users file).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
from pathlib import Path

from lo_stream.connectors.exceptions import TokenFileError
from lo_stream.envelopes import Identity

__all__ = ["TOKEN_PROVIDENCE", "SecretFile", "TokenStore", "hash_token", "new_token"]

TOKEN_PROVIDENCE = "token"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class SecretFile:
    """A JSON file of named entries holding secrets (hashed), readable by its owner only.

    Responsibilities: re-read the file when it changed on disk, check each entry has the
    `required` fields, find an entry by token hash, add and remove entries atomically.
    """

    section = "entries"
    required: tuple[str, ...] = ("name", "sha256")
    error = TokenFileError

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: list[dict] = []
        self._by_hash: dict[str, dict] = {}
        self._loaded_stamp: tuple[int, int] | None = None

    def entries(self) -> list[dict]:
        self._refresh()
        return list(self._entries)

    def by_token(self, token: str) -> dict | None:
        self._refresh()
        return self._by_hash.get(hash_token(token))

    def by_name(self, name: str) -> dict | None:
        self._refresh()
        return next((entry for entry in self._entries if entry["name"] == name), None)

    def append(self, entry: dict) -> None:
        if self.by_name(entry["name"]) is not None:
            raise self.error(f"{entry['name']!r} exists in {self.path}: revoke it first or pick another name")
        entry.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        self._entries.append(entry)
        self._write()

    def revoke(self, name: str) -> bool:
        """Forget the entry called `name`; False when there was none."""
        self._refresh()
        kept = [entry for entry in self._entries if entry["name"] != name]
        if len(kept) == len(self._entries):
            return False
        self._entries = kept
        self._write()
        return True

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        # Readable by the owner only; replaced atomically so a reader never sees half a file.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({self.section: self._entries}, out, indent=2)
        os.replace(temporary, self.path)
        self._loaded_stamp = None
        self._refresh()

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._entries, self._by_hash, self._loaded_stamp = [], {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._loaded_stamp:
            return
        entries = self._parse()
        self._entries = entries
        self._by_hash = {entry["sha256"]: entry for entry in entries if entry.get("sha256")}
        self._loaded_stamp = stamp

    def _parse(self) -> list[dict]:
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise self.error(f"cannot read {self.path}: {exc}; fix or delete it") from None
        entries = document.get(self.section) if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise self.error(f"{self.path} must hold {{\"{self.section}\": [...]}}; fix or delete it")
        for position, entry in enumerate(entries):
            missing = [f for f in self.required if not isinstance(entry, dict) or not isinstance(entry.get(f), str)]
            if missing:
                raise self.error(f"{self.path}: entry {position} lacks {', '.join(missing)}; fix or delete it")
        return entries


class TokenStore(SecretFile):
    """The client tokens of a deployment.

    >>> import tempfile, pathlib
    >>> store = TokenStore(pathlib.Path(tempfile.mkdtemp()) / "tokens.json")
    >>> token = store.add("ana@school.org", name="ana-laptop")
    >>> store.identify(token).user_id
    'ana@school.org'
    >>> store.identify("guess") is None
    True
    """

    section = "tokens"
    required = ("name", "user_id", "sha256")

    def identify(self, token: str) -> Identity | None:
        """The identity a token stands for, or None for an unknown token."""
        entry = self.by_token(token)
        return Identity.of(entry["user_id"], TOKEN_PROVIDENCE) if entry else None

    def add(self, user_id: str, name: str | None = None) -> str:
        """Create a token for `user_id`; return it (it is shown once and stored only hashed)."""
        if not user_id.strip():
            raise TokenFileError("a token needs a user id (the student or client it stands for)")
        token = new_token()
        self.append({"name": name or user_id, "user_id": user_id, "sha256": hash_token(token)})
        return token
