"""A client of the query API: HTTP for one-off queries, websockets for live ones.

Used by the dashboards and by notebooks (`lo_stream.notebook`). The dashboard server signs in
with its own admin token and asks on behalf of the signed-in teacher
(``X-LO-Stream-On-Behalf-Of``), so the query layer applies that teacher's access rules and audits
their name.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import aiohttp

__all__ = ["ON_BEHALF_HEADER", "TOKEN_ENV", "BackendError", "QueryClient"]

# An admin service (the dashboards) asking for a signed-in teacher: that teacher's rules apply.
ON_BEHALF_HEADER = "X-LO-Stream-On-Behalf-Of"
TOKEN_ENV = "LO_STREAM_QUERY_TOKEN"
"""The environment variable a caller's token is read from when none is given."""


class BackendError(RuntimeError):
    """The query layer cannot be reached or refused a request; `status` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class QueryClient:
    """Talks to one worker's query API (any worker can answer any query)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        return self._http

    def _headers(self, user: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if user:
            headers[ON_BEHALF_HEADER] = user
        return headers

    async def _request(self, method: str, path: str, user: str | None, body: Any = None) -> Any:
        try:
            async with self._session().request(
                method, f"{self.base_url}{path}", json=body, headers=self._headers(user)
            ) as response:
                text = await response.text()
                if response.status != 200:
                    try:
                        message = json.loads(text).get("error", text)
                    except ValueError:
                        message = text
                    raise BackendError(message, response.status)
                return json.loads(text)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BackendError(f"the query layer at {self.base_url} is unreachable ({exc or type(exc).__name__})") from None

    async def courses(self, user: str) -> list[dict]:
        """The courses `user` may see."""
        return (await self._request("GET", "/api/courses", user))["courses"]

    async def run(self, export: str, params: dict, user: str | None) -> Any:
        return (await self._request("POST", "/api/query", user, {"export": export, "params": params}))["result"]

    async def live(self, export: str, params: dict) -> AsyncIterator[dict]:
        """The messages of a live subscription (as the dashboard service): a ``result``, then
        ``update``s. Raises `BackendError` when the connection cannot be made or is lost."""
        try:
            async with self._session().ws_connect(
                f"{self.base_url}/wsapi/query", headers=self._headers(None), heartbeat=20
            ) as ws:
                await ws.send_str(json.dumps({"subscribe": "live", "export": export, "params": params}))
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    yield json.loads(message.data)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise BackendError(f"the query layer at {self.base_url} is unreachable ({exc or type(exc).__name__})") from None
        raise BackendError(f"the query layer at {self.base_url} closed the live connection")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
