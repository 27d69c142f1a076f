"""Who may query: teachers and admins from a users file, by token or password.

    {"users": [{"name": "ms.rivera", "role": "teacher", "courses": ["alg-1"],
                "sha256": "<token hash>", "password": "scrypt$<salt>$<hash>"}]}

A teacher sees the courses the file lists for them plus those whose course record names them
as a teacher (`lo-stream rosters courses`), and only the students on those rosters; an admin
sees everything. Manage the file with ``lo-stream users add|list|revoke``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from lo_stream.connectors.auth import SecretFile, hash_token, new_token
from lo_stream.query.executor import Caller

__all__ = ["ROLES", "UserFileError", "UserStore", "hash_password"]

ROLES = ("teacher", "admin")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserFileError(ValueError):
    """The users file is unreadable, or a user change cannot be made."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _password_matches(password: str, stored: str) -> bool:
    try:
        scheme, salt, _ = stored.split("$")
        expected = hash_password(password, base64.b64decode(salt))
    except (ValueError, binascii.Error):
        return False
    return scheme == "scrypt" and hmac.compare_digest(expected, stored)


class UserStore(SecretFile):
    """The users of the query layer and the dashboards."""

    section = "users"
    required = ("name", "role")
    error = UserFileError

    def add(self, name: str, role: str, courses: list[str] = (), password: str | None = None) -> str:
        """Create a user; return their token (shown once, stored hashed)."""
        if role not in ROLES:
            raise UserFileError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not name.strip():
            raise UserFileError("a user needs a name")
        token = new_token()
        entry = {"name": name, "role": role, "courses": list(courses), "sha256": hash_token(token)}
        if password:
            entry["password"] = hash_password(password)
        self.append(entry)
        return token

    def by_token_caller(self, token: str) -> Caller | None:
        entry = self.by_token(token)
        return _caller(entry) if entry else None

    def by_password(self, name: str, password: str) -> Caller | None:
        entry = self.by_name(name)
        if entry is None or not entry.get("password") or not _password_matches(password, entry["password"]):
            return None
        return _caller(entry)


    def current(self, caller: Caller) -> Caller | None:
        """The user `caller` names as the users file has them now; None once revoked."""
        entry = self.by_name(caller.name)
        return _caller(entry, via=caller.via) if entry else None

    def on_behalf_of(self, name: str, service: Caller) -> Caller | None:
        """The user `name` as `service` (an admin) asks for them: their rules, the service named."""
        entry = self.by_name(name)
        return _caller(entry, via=service.name) if entry else None


def _caller(entry: dict, via: str | None = None) -> Caller:
    return Caller(entry["name"], entry["role"], frozenset(entry.get("courses") or ()), via=via)
