"""The query API every worker serves on its web port (beside ``/metrics``).

Responsibilities:

1. authenticate callers from the users file (``Authorization: Bearer <token>`` or HTTP Basic;
   websockets may pass ``?token=``) and refuse anonymous requests;
2. run a module's export (or, when the settings allow it, a client's DAG) for the caller;
3. read each key from the worker that owns its partition: local keys from the local table,
   the others in one internal request per worker; a worker answers once its tables are restored
   after a rebalance (it waits up to ``RESTORE_TIMEOUT``, then answers 503);
4. serve ``POST /api/query``, ``GET /api/exports``, ``GET /api/courses`` and the live websocket
   ``/wsapi/query``;
5. record every query run (who, what, parameters, when, how many students) to the audit topic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from yarl import URL

from lo_stream.agents.engine import Engine
from lo_stream.connectors.producer import EventProducer
from lo_stream.query.access import UserFileError, UserStore
from lo_stream.query.client import ON_BEHALF_HEADER
from lo_stream.query.cluster import cluster_secret
from lo_stream.query.executor import AccessDenied, Caller, Execution, Unavailable
from lo_stream.query.exports import ExportCatalog
from lo_stream.query.language import QueryError
from lo_stream.query.subscriptions import Subscription, SubscriptionHub, reducers_of
from lo_stream.reducers import Reducer
from lo_stream.settings import Settings
from lo_stream.tables import key_partition
from lo_stream.tables.rosters import RosterTable
from lo_stream.tables.store import Table

__all__ = ["QueryService", "install_query_api"]

logger = logging.getLogger(__name__)

CLUSTER_HEADER = "X-LO-Stream-Cluster"
READY_TIMEOUT = 30.0
ACCESS_RECHECK_S = 2.0  # how soon a revoked user's live queries end
ACCESS_REVOKED_CLOSE_CODE = 4403  # websocket close code (4000-4999: the application's own)
RESTORE_TIMEOUT = 8.0  # how long a read waits for the tables a rebalance is restoring


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value, default=str), status=status, content_type="application/json")


def _error(exc: QueryError) -> web.Response:
    status = 403 if isinstance(exc, AccessDenied) else 503 if isinstance(exc, Unavailable) else 400
    return _json(exc.as_json(), status)


class WorkerTableReader:
    """Reads table values, routing each key to the worker that holds its partition."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.url = engine.assignor.url
        self.cluster_secret: str | None = None  # known once the query API runs (`lo_stream.query.cluster`)
        self._http: aiohttp.ClientSession | None = None
        self.keys_read = {"local": 0, "remote": 0}

    async def read(self, reducer: Reducer, keys: list[str]) -> dict[str, dict | None]:
        await self.wait_restored()  # a rebalance changes who holds what, and restores the stores
        table = self.engine.tables[reducer.id]
        here = self._ident(URL(self.url))
        owners = self.engine.owners
        local: list[str] = []
        remote: dict[str, list[str]] = {}
        for key in keys:
            owner = owners.get(key_partition(self.settings, reducer, key))
            if owner is None:
                raise Unavailable("the workers are rebalancing their tables; try again in a moment")
            if self._ident(URL(owner)) == here:
                local.append(key)
            else:
                remote.setdefault(owner.rstrip("/"), []).append(key)
        values = self.read_local(table.name, local)
        for url, owner_keys in remote.items():
            values.update(await self._read_remote(url, table.name, owner_keys))
        self.keys_read["local"] += len(local)
        self.keys_read["remote"] += len(keys) - len(local)
        return values

    async def wait_restored(self) -> None:
        """Wait until this worker's stores hold their whole changelogs again after a rebalance:
        before, a store holds part of its values only."""
        try:
            await asyncio.wait_for(self.engine.restored.wait(), RESTORE_TIMEOUT)
        except asyncio.TimeoutError:
            raise Unavailable(f"worker {self.url} is still restoring its tables "
                              f"after a rebalance ({RESTORE_TIMEOUT:.0f} s); try again in a moment") from None

    def table(self, table_name: str) -> Table | None:
        return next((t for t in self.engine.tables.values() if t.name == table_name), None)

    def read_local(self, table_name: str, keys: list[str]) -> dict[str, dict | None]:
        """Values from this worker's table; `wait_restored` first."""
        table = self.table(table_name)
        return {key: table.get(key) for key in keys}

    async def read_restored(self, table_name: str, keys: list[str]) -> dict[str, dict | None]:
        """Values from this worker's table once it is restored (another worker's read)."""
        await self.wait_restored()
        return self.read_local(table_name, keys)

    async def _read_remote(self, url: str, table_name: str, keys: list[str]) -> dict[str, dict | None]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RESTORE_TIMEOUT + 10))
        try:
            async with self._http.post(
                f"{url}/api/internal/read",
                data=orjson.dumps({"table": table_name, "keys": keys}),
                headers={CLUSTER_HEADER: self.cluster_secret or "", "Content-Type": "application/json"},
            ) as response:
                if response.status != 200:
                    raise Unavailable(f"worker {url} answered {response.status}: {await response.text()}")
                return orjson.loads(await response.read())["values"]
        except aiohttp.ClientError as exc:
            raise Unavailable(f"worker {url} holding part of the table is unreachable ({exc})") from None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    @staticmethod
    def _ident(url: URL) -> tuple[str, int]:
        return (url.host or "", int(url.port or 80))


class QueryService:
    """The query API of one worker."""

    def __init__(self, engine: Engine, settings: Settings, reducers: list[Reducer], catalog: ExportCatalog) -> None:
        self.settings = settings
        self.reducers = {reducer.id: reducer for reducer in reducers}
        self.catalog = catalog
        self.users = UserStore(settings.users_file)
        self.rosters = RosterTable(settings)
        self.hub = SubscriptionHub(settings, self.reducers)
        self.reader = WorkerTableReader(engine, settings)
        self.audit = EventProducer(settings)
        self.ready = asyncio.Event()
        self.sockets: dict[web.WebSocketResponse, tuple[web.Request, Caller]] = {}  # open /wsapi/query

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Start what the API needs and keep it until the worker stops."""
        self.reader.cluster_secret = await cluster_secret(self.settings)
        await self.audit.start()
        await self.rosters.start()
        self.rosters.listeners.append(self.hub.roster_changed)
        self.ready.set()
        try:
            while True:
                await asyncio.sleep(ACCESS_RECHECK_S)
                await self._recheck_access()
        finally:
            await self.hub.stop()
            await self.rosters.stop()
            await self.reader.close()
            await self.audit.stop()

    async def _recheck_access(self) -> None:
        """Close the live connections of callers whose access was revoked or changed since they
        connected (``lo-stream users revoke``, other courses or role): they sign in again, as they now are."""
        for ws, (request, caller) in list(self.sockets.items()):
            why = "your access changed (role or courses)"
            try:
                if request.headers.get("Authorization", "").lower().startswith("basic "):
                    now = self.users.current(caller)  # its password was checked once: scrypt every few seconds costs
                else:
                    now = self.caller(request)
            except (UserFileError, web.HTTPInternalServerError):
                return  # the users file is unreadable now (logged): nobody is cut off for that
            except web.HTTPException:
                now = None
            if now == caller:
                continue
            if now is None:
                why = f"{caller.name} is no longer a user here"
            logger.info("closing %s's live queries: %s", caller.name, why)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(orjson.dumps({"subscription": None, "type": "error", "node": None,
                                                "error": f"access revoked: {why}; sign in again"}).decode())
            await ws.close(code=ACCESS_REVOKED_CLOSE_CODE, message=b"access revoked")

    async def _wait_ready(self) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT)
        except asyncio.TimeoutError:
            raise Unavailable("the worker is still starting; try again in a moment") from None

    # -- who asks ----------------------------------------------------------------------------

    def caller(self, request: web.Request) -> Caller:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        credentials = credentials.strip()
        try:
            if scheme.lower() == "bearer" and credentials:
                caller = self.users.by_token_caller(credentials)
            elif scheme.lower() == "basic" and credentials:
                try:
                    name, _, password = base64.b64decode(credentials).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    raise web.HTTPBadRequest(text="malformed Basic credentials") from None
                caller = self.users.by_password(name, password)
            elif request.query.get("token"):
                caller = self.users.by_token_caller(request.query["token"])
            else:
                raise web.HTTPUnauthorized(
                    text='{"error": "sign in: Authorization: Bearer <token>, or Basic with name and password"}',
                    content_type="application/json", headers={"WWW-Authenticate": 'Basic realm="lo_stream"'},
                )
        except UserFileError as exc:
            logger.error("users file: %s", exc)
            raise web.HTTPInternalServerError(text=f"the users file is broken: {exc}") from None
        if caller is None:
            raise web.HTTPUnauthorized(
                text='{"error": "unknown token, or wrong name or password"}', content_type="application/json"
            )
        on_behalf_of = request.headers.get(ON_BEHALF_HEADER)
        if on_behalf_of:
            if not caller.is_admin:
                raise web.HTTPForbidden(text=f"only an admin may ask on behalf of someone ({ON_BEHALF_HEADER})")
            caller = self.users.on_behalf_of(on_behalf_of, caller)
            if caller is None:
                raise web.HTTPForbidden(text=f"no user named {on_behalf_of!r}")
        return caller

    # -- running -----------------------------------------------------------------------------

    def _document(self, body: Any) -> tuple[dict, str, str]:
        """(document, node to return, what to call it in the audit) of a request body."""
        if not isinstance(body, dict):
            raise QueryError('send {"export": "<module>.<name>", "params": {...}}')
        if "export" in body:
            export = self.catalog.get(body["export"])
            return export.document, export.returns, export.id
        if "query" in body:
            if not self.settings.query_allow_client_dags:
                raise QueryError(
                    "this deployment runs only the modules' named exports (LO_STREAM_QUERY_ALLOW_CLIENT_DAGS is off)"
                )
            document, returns = body["query"], body.get("returns")
            self.catalog.check(document)
            if returns not in document["execution_dag"]:
                raise QueryError('"returns" must name a node of the query')
            return document, returns, f"<client query>.{returns}"
        raise QueryError('send {"export": "<module>.<name>", "params": {...}}')

    async def execute(self, caller: Caller, body: Any, endpoint: str, *,
                      restrict_students: set[str] | None = None, audit: bool = True) -> Any:
        """Run a request's query for `caller` (for some students only, when restricted)."""
        await self._wait_ready()
        what, params, execution = None, None, None
        try:
            document, returns, what = self._document(body)
            params = body.get("params") or {}
            if not isinstance(params, dict):
                raise QueryError('"params" must be an object')
            execution = Execution(
                document, params, reader=self.reader, rosters=self.rosters, reducers=self.reducers,
                caller=caller, restrict_students=restrict_students,
            )
            result = await execution.run(returns)
        except QueryError as exc:
            if audit:
                await self._audit(caller, endpoint, what, params, execution, exc)
            raise
        if audit:
            await self._audit(caller, endpoint, what, params, execution, None)
        return result

    async def _audit(self, caller: Caller, endpoint: str, what: str | None, params: Any,
                     execution: Execution | None, error: QueryError | None) -> None:
        status = "ok" if error is None else "denied" if isinstance(error, AccessDenied) else "error"
        record = {
            "time": time.time(), "user": caller.name, "role": caller.role, "via": caller.via, "endpoint": endpoint,
            "query": what, "params": params, "status": status,
            "students": len(execution.students_read) if execution is not None and error is None else 0,
        }
        if error is not None:
            record["error"] = str(error)
        await self.audit.send_record(self.settings.topics.audit, caller.name, record)

    # -- endpoints ---------------------------------------------------------------------------

    async def post_query(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"the body is not JSON: {exc}", "node": None}, 400)
        try:
            result = await self.execute(caller, body, "http")
        except QueryError as exc:
            return _error(exc)
        return _json({"export": body.get("export"), "params": body.get("params") or {}, "result": result})

    async def get_exports(self, request: web.Request) -> web.Response:
        self.caller(request)
        return _json([export.describe() for export in self.catalog])

    async def get_courses(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
        try:
            await self._wait_ready()
        except QueryError as exc:
            return _error(exc)
        execution = Execution({"execution_dag": {}}, {}, reader=self.reader, rosters=self.rosters,
                              reducers=self.reducers, caller=caller)
        courses = []
        for course_id in sorted(execution.courses()):
            course = self.rosters.courses.get(course_id, {})
            students = self.rosters.students(course_id)
            courses.append({
                "course_id": course_id, "name": course.get("name", course_id), "teachers": course.get("teachers", []),
                "students": len(students) if students is not None else None,
            })
        return _json({"user": caller.name, "role": caller.role, "courses": courses})

    async def internal_read(self, request: web.Request) -> web.Response:
        await self._wait_ready()  # the secret is known then
        if not hmac.compare_digest(request.headers.get(CLUSTER_HEADER, "").encode(), self.reader.cluster_secret.encode()):
            raise web.HTTPForbidden(text="internal reads are for the deployment's workers: no or a wrong cluster "
                                         "secret (LO_STREAM_CLUSTER_SECRET, or the <prefix>.cluster topic's)")
        body = orjson.loads(await request.read())
        if self.reader.table(body.get("table")) is None:
            raise web.HTTPNotFound(text=f"no table {body.get('table')!r} on this worker")
        try:
            values = await self.reader.read_restored(body["table"], list(body.get("keys") or []))
        except Unavailable as exc:
            return _error(exc)
        return _json({"values": values})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        caller = self.caller(request)
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        subscriptions: dict[str, Subscription] = {}
        self.sockets[ws] = (request, caller)

        async def send(message: dict) -> None:
            if ws.closed:
                raise ConnectionError("the subscriber has gone")
            await ws.send_str(orjson.dumps(message, default=str).decode())

        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    request_body = orjson.loads(message.data)
                except orjson.JSONDecodeError as exc:
                    await send({"subscription": None, "type": "error", "error": f"not JSON: {exc}", "node": None})
                    continue
                await self._on_ws_message(caller, request_body, subscriptions, send)
        finally:
            self.sockets.pop(ws, None)
            for subscription in subscriptions.values():
                self.hub.unsubscribe(subscription)
        return ws

    async def _on_ws_message(self, caller: Caller, body: Any, subscriptions: dict[str, Subscription], send) -> None:
        if isinstance(body, dict) and "unsubscribe" in body:
            subscription = subscriptions.pop(str(body["unsubscribe"]), None)
            if subscription is not None:
                self.hub.unsubscribe(subscription)
            await send({"subscription": str(body["unsubscribe"]), "type": "unsubscribed"})
            return
        subscription_id = str(body.get("subscribe", "")) if isinstance(body, dict) else ""
        if not subscription_id:
            await send({"subscription": None, "type": "error", "node": None,
                        "error": 'send {"subscribe": "<id>", "export": ..., "params": {...}} or {"unsubscribe": "<id>"}'})
            return
        if subscription_id in subscriptions:
            self.hub.unsubscribe(subscriptions.pop(subscription_id))
        try:
            await self._wait_ready()
            document, returns, _ = self._document(body)
        except QueryError as exc:
            await send({"subscription": subscription_id, "type": "error", **exc.as_json()})
            return
        runs = 0

        async def run(students: set[str] | None) -> Any:
            nonlocal runs
            runs += 1  # the subscription is audited once, at its first result
            return await self.execute(caller, body, "websocket", restrict_students=students, audit=runs == 1)

        subscription = Subscription(subscription_id, reducers_of(document, returns), run, send)
        try:
            await self.hub.subscribe(subscription)
        except QueryError as exc:
            await send({"subscription": subscription_id, "type": "error", **exc.as_json()})
            return
        subscriptions[subscription_id] = subscription


class _LiveQueryMetrics:
    """Live subscriptions and connections at scrape time (a leak shows as a number that only grows)."""

    def __init__(self, service: QueryService) -> None:
        self._service = service

    def collect(self):
        subscriptions = GaugeMetricFamily("lo_stream_query_subscriptions", "Live query subscriptions.")
        subscriptions.add_metric([], len(self._service.hub.subscriptions))
        connections = GaugeMetricFamily("lo_stream_query_connections", "Open /wsapi/query connections.")
        connections.add_metric([], len(self._service.sockets))
        keys_read = CounterMetricFamily(
            "lo_stream_query_keys_read", "Table keys queries read, here or from the worker owning them.",
            labels=["where"],
        )
        for where, count in self._service.reader.keys_read.items():
            keys_read.add_metric([where], count)
        yield subscriptions
        yield connections
        yield keys_read


def install_query_api(web_app: web.Application, settings: Settings, engine: Engine, reducers: list[Reducer],
                      catalog: ExportCatalog, metrics: CollectorRegistry) -> QueryService:
    """Add the query API's routes to the worker's web server; the worker runs `QueryService.run`."""
    service = QueryService(engine, settings, reducers, catalog)
    metrics.register(_LiveQueryMetrics(service))
    router = web_app.router
    router.add_post("/api/query", service.post_query)
    router.add_get("/api/exports", service.get_exports)
    router.add_get("/api/courses", service.get_courses)
    router.add_post("/api/internal/read", service.internal_read)
    router.add_get("/wsapi/query", service.websocket)
    return service
