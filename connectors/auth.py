"""Who may send events: per-client tokens, kept hashed in a JSON file.

A token is handed to one client (a student's browser extension, a school's batch uploader) and
names the user its events belong to. The file stores only each token's SHA-256: tokens are 32
random bytes, so a fast hash is enough and a leaked file gives nothing away. The gateway
re-reads the file when it changes, so `lo-stream tokens add` takes effect without a restart.

    {"tokens": [{"name": "ana-laptop", "user_id": "ana@school.org", "sha256": "9f2c...",
                 "created": "2026-11-24T10:00:00+00:00"}]}
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

__all__ = ["TOKEN_PROVIDENCE", "TokenStore", "hash_token"]

TOKEN_PROVIDENCE = "token"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The client tokens of a deployment.

    >>> import tempfile, pathlib
    >>> store = TokenStore(pathlib.Path(tempfile.mkdtemp()) / "tokens.json")
    >>> token = store.add("ana@school.org", name="ana-laptop")
    >>> store.identify(token).user_id
    'ana@school.org'
    >>> store.identify("guess") is None
    True
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: list[dict] = []
        self._by_hash: dict[str, dict] = {}
        self._loaded_stamp: tuple[int, int] | None = None

    def entries(self) -> list[dict]:
        self._refresh()
        return list(self._entries)

    def identify(self, token: str) -> Identity | None:
        """The identity a token stands for, or None for an unknown token."""
        self._refresh()
        entry = self._by_hash.get(hash_token(token))
        return Identity.of(entry["user_id"], TOKEN_PROVIDENCE) if entry else None

    def add(self, user_id: str, name: str | None = None) -> str:
        """Create a token for `user_id`; return it (it is shown once and stored only hashed)."""
        if not user_id.strip():
            raise TokenFileError("a token needs a user id (the student or client it stands for)")
        self._refresh()
        name = name or user_id
        if any(entry["name"] == name for entry in self._entries):
            raise TokenFileError(f"a token named {name!r} exists in {self.path}: revoke it first or pick another --name")
        token = secrets.token_urlsafe(32)
        self._entries.append(
            {
                "name": name,
                "user_id": user_id,
                "sha256": hash_token(token),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        self._write()
        return token

    def revoke(self, name: str) -> bool:
        """Forget the token called `name`; False when there was none."""
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
            json.dump({"tokens": self._entries}, out, indent=2)
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
        self._by_hash = {entry["sha256"]: entry for entry in entries}
        self._loaded_stamp = stamp

    def _parse(self) -> list[dict]:
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise TokenFileError(f"cannot read the tokens file {self.path}: {exc}; fix or delete it") from None
        entries = document.get("tokens") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise TokenFileError(f"{self.path} must hold {{\"tokens\": [...]}}; fix or delete it")
        for position, entry in enumerate(entries):
            missing = [field for field in ("name", "user_id", "sha256") if not isinstance(entry.get(field), str)]
            if missing:
                raise TokenFileError(f"{self.path}: token {position} lacks {', '.join(missing)}; fix or delete it")
        return entries
