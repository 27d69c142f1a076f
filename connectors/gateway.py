"""The ingest gateway: Learning Observer's websocket protocol and an HTTP batch endpoint, into Kafka.

Responsibilities:

1. speak LO's ``/wsapi/in/`` protocol: one JSON event per text frame, ``lock_fields`` merged into
   later events, an identity step answered with ``{"status": "auth", "user_id": ...}`` (events sent
   before it are held, then delivered), the development-only ``test_framework_fake_identity``;
2. authenticate with client tokens (``Authorization: Bearer``, ``?token=``, an ``auth_token`` event,
   or LO's ``local_storage`` event carrying the token as ``user_tag``);
3. wrap each event in the envelope and store it in the events topic, keyed by student, packing
   what arrived while the previous write was in flight into one message;
4. acknowledge only what Kafka acknowledged: ``{"status": "ack", "seq": n}`` means every frame up
   to the n-th of this connection is stored or was answered with an error;
5. answer bad input with ``{"status": "error", "seq", "reason", "message"}``, dead-letter it with the
   raw input, and keep the connection;
6. ``POST /api/events`` (JSON array or JSON lines, bearer token) with per-event results,
   ``GET /healthz`` and ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from lo_stream.connectors.auth import TokenStore
from lo_stream.connectors.producer import EventProducer, pack
from lo_stream.envelopes import Identity, make_envelope
from lo_stream.settings import Settings

__all__ = ["Gateway", "RejectedEvent", "decode_event", "lock_fields", "nesting", "validate_event"]

logger = logging.getLogger(__name__)

# Events a connection packs into one write; more wait for the next one.
MAX_BATCH_EVENTS = 500
# How much of an oversize input a dead letter keeps (the whole of it may not fit in Kafka).
OVERSIZE_SAMPLE_BYTES = 4096
# Deepest nesting of objects and arrays an event may have. Learning Observer's events nest a few
# levels; JSON encoders give up at a few hundred, and an event must be encoded again to be stored.
MAX_DEPTH = 64
# How long a closed connection keeps trying to store what it holds (Kafka unreachable or slow),
# and how long the gateway's producer may take to stop: what is not stored was never
# acknowledged, so the client knows to send it again; the gateway must not hang on it.
CLOSING_WRITE_S = 8.0
PRODUCER_STOP_S = 5.0
# Optional fields of an event and the JSON types they must have.
TYPED_FIELDS: dict[str, tuple[type, ...]] = {"source": (str,), "timestamp": (int, float), "doc_id": (str,)}
JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


class RejectedEvent(ValueError):
    """An input the gateway cannot use: `reason` is a short code, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _json_type(value: Any) -> str:
    return "null" if value is None else JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def validate_event(value: Any) -> dict:
    """Check one decoded event: an object with a string ``event`` and well-typed known fields.

    >>> validate_event({"event": "keystroke", "timestamp": 1700000000000})["event"]
    'keystroke'
    >>> validate_event({"timestamp": 1})
    Traceback (most recent call last):
    ...
    lo_stream.connectors.gateway.RejectedEvent: the event has no "event" field (its type, e.g. "keystroke")
    """
    if not isinstance(value, dict):
        raise RejectedEvent("not_an_object", f"an event must be a JSON object, not a JSON {_json_type(value)}")
    if "event" not in value:
        raise RejectedEvent("missing_field", 'the event has no "event" field (its type, e.g. "keystroke")')
    if not isinstance(value["event"], str) or not value["event"]:
        raise RejectedEvent("wrong_type", f'"event" must be a non-empty string, not {_json_type(value["event"])}')
    for field, types in TYPED_FIELDS.items():
        if field in value and (not isinstance(value[field], types) or isinstance(value[field], bool)):
            expected = JSON_TYPE_NAMES[types[0]]
            raise RejectedEvent("wrong_type", f'"{field}" must be a {expected}, not {_json_type(value[field])}')
    if isinstance(value.get("timestamp"), float) and not math.isfinite(value["timestamp"]):
        raise RejectedEvent("wrong_type", '"timestamp" must be a finite number (milliseconds since the epoch)')
    return value


def decode_event(raw: bytes, limit: int) -> dict:
    if len(raw) > limit:
        raise RejectedEvent(
            "too_large", f"the event is {len(raw)} bytes; the limit is {limit} (LO_STREAM_GATEWAY_MAX_EVENT_BYTES)"
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RejectedEvent("invalid_json", f"not valid JSON: {exc}") from None
    if nesting(value) > MAX_DEPTH:
        raise RejectedEvent("too_deep", f"the event nests objects and arrays more than {MAX_DEPTH} levels deep")
    return validate_event(value)


def nesting(value: Any) -> int:
    """How deep objects and arrays nest in a decoded JSON value (a scalar: 0).

    >>> nesting(1), nesting({"a": [1, {"b": []}]})
    (0, 4)
    """
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        level.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def lock_fields(locked: dict, fields: Any, limit: int) -> dict:
    """The locked fields of a connection once `fields` are added. They are merged into every later
    event, so they are checked as an event's fields are, and bounded (all together) like one event.

    >>> lock_fields({"doc_id": "d1"}, {"source": "ext"}, 1024)
    {'doc_id': 'd1', 'source': 'ext'}
    >>> lock_fields({}, {"event": []}, 1024)
    Traceback (most recent call last):
    ...
    lo_stream.connectors.gateway.RejectedEvent: lock_fields: "event" must be a non-empty string, not array
    """
    if not isinstance(fields, dict):
        raise RejectedEvent("wrong_type", f'"fields" of lock_fields must be an object, not {_json_type(fields)}')
    merged = {**locked, **fields}
    try:
        validate_event({"event": "lock_fields", **merged})
    except RejectedEvent as exc:
        raise RejectedEvent(exc.reason, f"lock_fields: {exc}") from None
    try:
        size = len(orjson.dumps(merged))
    except orjson.JSONEncodeError as exc:
        raise RejectedEvent("unencodable", f"lock_fields: the fields cannot be stored as JSON: {exc}") from None
    if size > limit:
        raise RejectedEvent("too_large", f"lock_fields: the locked fields would total {size} bytes; the limit is "
                                         f"{limit} (LO_STREAM_GATEWAY_MAX_EVENT_BYTES), as for one event")
    return merged


def raw_sample(raw: bytes) -> tuple[bytes, dict]:
    """What a dead letter keeps of an input: all of it, or its start and its size when large."""
    if len(raw) <= OVERSIZE_SAMPLE_BYTES:
        return raw, {}
    return raw[:OVERSIZE_SAMPLE_BYTES], {"raw_bytes": len(raw), "raw_truncated": True}


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "lo_stream_gateway_events_accepted", "Events stored in the events topic.", ["transport"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "lo_stream_gateway_events_rejected", "Inputs refused, by reason.", ["reason"], registry=self.registry
        )
        self.connections = Gauge(
            "lo_stream_gateway_open_connections", "Open websocket connections.", registry=self.registry
        )
        self.messages = Counter(
            "lo_stream_gateway_messages", "Messages written to the events topic (events are packed).",
            registry=self.registry,
        )


@dataclass
class Frame:
    """A data event of a websocket connection, waiting for its write."""

    seq: int
    event: dict
    received: float
    size: int = 0  # bytes it holds, about (as received, with the locked fields)


class Gateway:
    """The gateway of one deployment; `app()` is its aiohttp application.

    >>> from lo_stream.settings import load_settings
    >>> application = Gateway(load_settings()).app()
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = TokenStore(settings.gateway_tokens_file)
        self.metrics = GatewayMetrics()
        self.producer = EventProducer(settings, linger_ms=0)
        self.connections: set[Connection] = set()
        self.held_bytes = 0  # held for connections not yet authenticated, together

    def app(self) -> web.Application:
        application = web.Application(client_max_size=self.settings.gateway_max_request_bytes)
        application.router.add_get("/wsapi/in/", self.websocket)
        application.router.add_get("/wsapi/in", self.websocket)
        application.router.add_post("/api/events", self.post_events)
        application.router.add_get("/healthz", self.healthz)
        application.router.add_get("/metrics", self.metrics_page)
        application.on_startup.append(self._start)
        application.on_shutdown.append(self._close_connections)
        application.on_cleanup.append(self._stop)
        return application

    async def _start(self, _: web.Application) -> None:
        await self.producer.start()
        if self.settings.gateway_insecure_identity:
            logger.warning(
                "\n%s\n  INSECURE DEVELOPMENT MODE: anyone can send events as any student with "
                "test_framework_fake_identity.\n  Never expose this gateway; unset "
                "LO_STREAM_GATEWAY_INSECURE_IDENTITY in production.\n%s", "!" * 78, "!" * 78,
            )

    async def _close_connections(self, _: web.Application) -> None:
        for connection in list(self.connections):
            await connection.ws.close(code=1001, message=b"gateway shutting down")

    async def _stop(self, _: web.Application) -> None:
        try:
            await asyncio.wait_for(self.producer.stop(), PRODUCER_STOP_S)
        except asyncio.TimeoutError:
            logger.error("Kafka did not take the last writes within %.0f s of stopping; they were never acknowledged",
                         PRODUCER_STOP_S)

    # -- authentication ----------------------------------------------------------------------

    def identify_token(self, token: str) -> Identity:
        identity = self.tokens.identify(token)
        if identity is None:
            raise RejectedEvent(
                "unknown_token", "unknown or revoked token: ask the deployment's operator for one (lo-stream tokens add)"
            )
        return identity

    def identify_insecure(self, user_id: Any) -> Identity:
        if not self.settings.gateway_insecure_identity:
            raise RejectedEvent(
                "insecure_identity_disabled",
                "test_framework_fake_identity is accepted only in development mode "
                "(LO_STREAM_GATEWAY_INSECURE_IDENTITY=true); authenticate with a client token",
            )
        if not isinstance(user_id, str) or not user_id:
            raise RejectedEvent("wrong_type", '"user_id" of test_framework_fake_identity must be a non-empty string')
        return Identity.test_case(user_id)

    def server_fields(self, request: web.Request) -> dict:
        return {
            "origin": request.headers.get("Origin", ""),
            "agent": request.headers.get("User-Agent", ""),
            "ip": request.remote or "",
            "executable": "lo_stream.gateway",
        }

    async def reject(self, exc: RejectedEvent, raw: bytes, identity: Identity | None, **context: Any) -> None:
        self.metrics.rejected.labels(exc.reason).inc()
        sample, sizes = raw_sample(raw)
        await self.producer.send_dead_letter(
            f"{exc.reason}: {exc}", sample, stage="gateway", key=identity.safe_user_id if identity else None,
            user_id=identity.user_id if identity else None, **sizes, **context,
        )

    # -- endpoints ---------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        unauthenticated = sum(1 for connection in self.connections if connection.identity is None)
        if unauthenticated >= self.settings.gateway_max_unauthenticated_connections and not _request_token(request):
            self.metrics.rejected.labels("busy").inc()
            raise web.HTTPServiceUnavailable(
                text=f"{unauthenticated} connections are waiting to authenticate "
                     "(LO_STREAM_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS): try again later, or connect with a token",
                headers={"Retry-After": "10"},
            )
        # Frames up to 4x the event limit are refused politely; aiohttp closes on larger ones.
        ws = web.WebSocketResponse(max_msg_size=4 * self.settings.gateway_max_event_bytes, heartbeat=30)
        await ws.prepare(request)
        connection = Connection(self, ws, request)
        self.connections.add(connection)
        self.metrics.connections.inc()
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            self.metrics.connections.dec()
        return ws

    async def post_events(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            exc = RejectedEvent(
                "too_large",
                f"the request is over {self.settings.gateway_max_request_bytes} bytes "
                "(LO_STREAM_GATEWAY_MAX_REQUEST_BYTES): send smaller batches",
            )
            await self.reject(exc, b"", None, transport="http", raw_bytes=request.content_length)
            return _json_error(413, exc)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise RejectedEvent("missing_token", "send a client token as 'Authorization: Bearer <token>'")
            identity = self.identify_token(token.strip())
        except RejectedEvent as exc:
            await self.reject(exc, body, None, transport="http")
            return _json_error(401, exc)
        if not body.strip():
            return _json_error(400, RejectedEvent("empty", "the body is empty: send a JSON array or JSON lines"))

        received = time.time()
        server = {**self.server_fields(request), "time": received}
        results: list[dict] = []
        envelopes: list[dict] = []
        for index, raw in enumerate(_split_body(body)):
            try:
                if raw is None:
                    raw = b"<an item of the array nested too deep to keep>"
                    raise RejectedEvent("too_deep", f"the event nests objects and arrays more than {MAX_DEPTH} levels deep")
                event = decode_event(raw, self.settings.gateway_max_event_bytes)
                if event["event"] in CONTROL_EVENTS:
                    raise RejectedEvent(
                        "control_event", f'"{event["event"]}" belongs to the websocket protocol, not to POST /api/events'
                    )
            except RejectedEvent as exc:
                await self.reject(exc, raw, identity, transport="http", index=index)
                results.append({"index": index, "status": "rejected", "reason": exc.reason, "message": str(exc)})
                continue
            # An event decode_event accepted encodes again (JSON values, nested at most MAX_DEPTH): tests/test_fuzz.py
            envelopes.append(make_envelope(event, identity, **server))
            results.append({"index": index, "status": "accepted"})
        if envelopes:
            try:
                sent = await self.producer.send_envelopes(identity.safe_user_id, envelopes)
            except KafkaError as exc:
                logger.error("POST /api/events: Kafka did not store %d events: %s", len(envelopes), exc)
                return _json_error(503, RejectedEvent("kafka_unavailable", f"events not stored ({exc}); retry later"))
            self.metrics.accepted.labels("http").inc(len(envelopes))
            self.metrics.messages.inc(len(sent))
        accepted = len(envelopes)
        return web.json_response(
            {"user_id": identity.user_id, "accepted": accepted, "rejected": len(results) - accepted, "results": results},
            dumps=lambda value: orjson.dumps(value).decode(),
        )

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "connections": len(self.connections)})

    async def metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


# Refusals of who a client says it is: logged (once per connection), not only answered.
IDENTITY_REFUSALS = {"insecure_identity_disabled", "unknown_token", "auth_conflict"}

# Events that steer a websocket connection and are not stored as events.
CONTROL_EVENTS = {"lock_fields", "test_framework_fake_identity", "auth_token", "local_storage", "metadata_finished"}


def _split_body(body: bytes) -> list[bytes | None]:
    """The events of a POST body: the items of a JSON array, else one per non-blank line. None
    stands for an item of an array that cannot be encoded again (nested too deep to keep)."""
    stripped = body.strip()
    if stripped.startswith(b"["):
        try:
            items = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass  # JSON lines whose first line is an array: each line is judged on its own
        else:
            return [_encoded_or_none(item) for item in items]
    return [line for line in stripped.splitlines() if line.strip()]


def _encoded_or_none(item: Any) -> bytes | None:
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return None


def _json_error(status: int, exc: RejectedEvent) -> web.Response:
    return web.json_response({"status": "error", "reason": exc.reason, "message": str(exc)}, status=status)


class Connection:
    """One websocket client: its locked fields, identity, held events and unacknowledged writes."""

    def __init__(self, gateway: Gateway, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.gateway = gateway
        self.ws = ws
        self.request = request
        self.server = gateway.server_fields(request)
        self.seq = 0  # frames read so far
        self.acked = 0
        self.locked: dict = {}
        self.locked_bytes = 2  # encoded, "{}"
        self.identity: Identity | None = None
        self.held: list[Frame] = []  # data events before authentication
        self.held_bytes = 0
        self.pending: deque[Frame] = deque()  # authenticated, not yet written
        self.in_flight: list[Frame] = []
        self.wakeup = asyncio.Event()
        self.closing = False
        self.refusal_logged = False  # an identity refusal is logged once per connection

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop())
        deadline = asyncio.create_task(self._close_unless_authenticated())
        try:
            await self._authenticate_from_request()
            async for message in self.ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.seq += 1
                    raw = message.data.encode() if message.type == WSMsgType.TEXT else message.data
                    await self._handle(raw)
                elif message.type == WSMsgType.ERROR:
                    logger.info("websocket closed with an error: %s", self.ws.exception())
        finally:
            deadline.cancel()
            self.closing = True
            self.wakeup.set()
            # Whatever the client sent is stored even when it has gone away, if Kafka takes it soon.
            try:
                await asyncio.wait_for(writer, CLOSING_WRITE_S)
            except asyncio.TimeoutError:
                unstored = len(self.in_flight) + len(self.pending)
                logger.error("connection of %s closed: %d unacknowledged events not stored (Kafka did not take them "
                             "within %.0f s)", self.identity.user_id if self.identity else "?", unstored, CLOSING_WRITE_S)
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await asyncio.wait_for(self._dead_letter_held(), CLOSING_WRITE_S)

    async def _close_unless_authenticated(self) -> None:
        timeout = self.gateway.settings.gateway_auth_timeout_s
        await asyncio.sleep(timeout)
        if self.identity is None:
            await self._reply({"status": "error", "seq": self.seq, "reason": "not_authenticated",
                               "message": f"no identity within {timeout:g}s of connecting "
                                          "(LO_STREAM_GATEWAY_AUTH_TIMEOUT_S): the connection is closed"})
            await self.ws.close(code=4401, message=b"not authenticated")

    async def _authenticate_from_request(self) -> None:
        token = _request_token(self.request)
        if token:
            try:
                await self._authenticated(self.gateway.identify_token(token))
            except RejectedEvent as exc:
                await self._refuse(exc, b"<token in the connection request>")

    async def _handle(self, raw: bytes) -> None:
        try:
            event = decode_event(raw, self.gateway.settings.gateway_max_event_bytes)
            kind = event["event"]
            if kind == "lock_fields":
                self.locked = lock_fields(self.locked, event.get("fields"), self.gateway.settings.gateway_max_event_bytes)
                self.locked_bytes = len(orjson.dumps(self.locked))  # counted into every held frame's size
            elif kind == "test_framework_fake_identity":
                await self._authenticated(self.gateway.identify_insecure(event.get("user_id")))
            elif kind == "auth_token":
                await self._authenticated(self.gateway.identify_token(_string(event, "token")))
            elif kind == "local_storage":  # LO's browser extension: the token is its user_tag
                storage = event.get("local_storage")
                tag = storage.get("user_tag") if isinstance(storage, dict) else None
                await self._authenticated(self.gateway.identify_token(tag if isinstance(tag, str) else ""))
            elif kind != "metadata_finished":
                merged = {**event, **self.locked}
                self._accept(Frame(self.seq, merged, time.time(), size=len(raw) + self.locked_bytes))
                return
        except RejectedEvent as exc:
            await self._refuse(exc, raw)
        await self._acknowledge()

    def _accept(self, frame: Frame) -> None:
        if self.identity is not None:
            self.pending.append(frame)
            self.wakeup.set()
            return
        settings, size = self.gateway.settings, frame.size
        if len(self.held) >= settings.gateway_max_held_events or self.held_bytes + size > settings.gateway_max_held_bytes:
            raise RejectedEvent(
                "not_authenticated",
                f"{len(self.held)} events ({self.held_bytes} bytes) are waiting for authentication "
                "(LO_STREAM_GATEWAY_MAX_HELD_EVENTS, LO_STREAM_GATEWAY_MAX_HELD_BYTES): authenticate first",
            )
        if self.gateway.held_bytes + size > settings.gateway_max_unauthenticated_bytes:
            raise RejectedEvent(
                "busy", "the gateway holds as many events of unauthenticated connections as it may "
                        "(LO_STREAM_GATEWAY_MAX_UNAUTHENTICATED_BYTES): authenticate first",
            )
        self.held.append(frame)
        self._hold(size)

    def _hold(self, size: int) -> None:
        self.held_bytes += size
        self.gateway.held_bytes += size

    async def _authenticated(self, identity: Identity) -> None:
        if self.identity is not None and self.identity != identity:
            raise RejectedEvent(
                "auth_conflict", f"this connection is already authenticated as {self.identity.user_id!r}; open another"
            )
        self.identity = identity
        await self._reply({"status": "auth", "user_id": identity.user_id})
        self.pending.extend(self.held)
        self.held = []
        self._hold(-self.held_bytes)
        self.wakeup.set()

    async def _refuse(self, exc: RejectedEvent, raw: bytes) -> None:
        await self._reply({"status": "error", "seq": self.seq, "reason": exc.reason, "message": str(exc)})
        await self.gateway.reject(exc, raw, self.identity, transport="websocket", seq=self.seq, ip=self.server["ip"])
        if exc.reason in IDENTITY_REFUSALS and not self.refusal_logged:  # an operator must see a class locked out
            self.refusal_logged = True
            logger.warning("refused the identity of a connection from %s (%s): %s", self.server["ip"] or "?",
                           exc.reason, exc)

    async def _write_loop(self) -> None:
        backoff = 0.5
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                self.in_flight = [self.pending.popleft() for _ in range(min(MAX_BATCH_EVENTS, len(self.pending)))]
                try:
                    await self._write_in_flight()
                except KafkaError as exc:
                    # Not stored, not acknowledged: keep the events and try again (once the client
                    # has gone, for CLOSING_WRITE_S at most: see `run`).
                    logger.error("Kafka did not store %d events (%s); retrying in %.1fs", len(self.in_flight), exc, backoff)
                    self.pending.extendleft(reversed(self.in_flight))
                    self.in_flight = []
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10)
                    continue
                backoff = 0.5
            if self.closing:
                return

    async def _write_in_flight(self) -> None:
        """Store the in-flight events, one Kafka message (a packed run) after the other: a message
        is stored whole or not at all, so after a failure exactly the events not yet stored are
        left in flight (sending them again duplicates nothing). A run Kafka refuses as too large
        (a lone large event, as runs are packed) is answered and dead-lettered instead."""
        envelopes = [make_envelope(frame.event, self.identity, **self.server, time=frame.received)
                     for frame in self.in_flight]
        for run in pack(envelopes):
            frames = self.in_flight[:len(run)]
            try:
                await self.gateway.producer.send_run(self.identity.safe_user_id, run)  # packed once, above
            except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
                refused = RejectedEvent("too_large", f"Kafka refused the event as too large ({exc})")
                for frame, envelope in zip(frames, run):
                    await self._reply({"status": "error", "seq": frame.seq, "reason": refused.reason,
                                       "message": str(refused)})
                    await self.gateway.reject(refused, orjson.dumps(envelope), self.identity, transport="websocket",
                                              seq=frame.seq, ip=self.server["ip"])
            else:
                self.gateway.metrics.accepted.labels("websocket").inc(len(run))
                self.gateway.metrics.messages.inc()
            self.in_flight = self.in_flight[len(run):]
            await self._acknowledge()

    async def _acknowledge(self) -> None:
        """Tell the client how far every frame is safe: stored, or answered with an error."""
        waiting = [frames[0].seq for frames in (self.held, self.in_flight, self.pending) if frames]
        safe = min(waiting) - 1 if waiting else self.seq
        if safe > self.acked:
            self.acked = safe
            await self._reply({"status": "ack", "seq": safe})

    async def _dead_letter_held(self) -> None:
        if self.held:
            exc = RejectedEvent("not_authenticated", "the connection closed before it authenticated")
            for frame in self.held:
                await self.gateway.reject(
                    exc, orjson.dumps(frame.event), None, transport="websocket", seq=frame.seq, ip=self.server["ip"]
                )
            self.held = []
            self._hold(-self.held_bytes)

    async def _reply(self, message: dict) -> None:
        if not self.ws.closed:
            try:
                await self.ws.send_str(orjson.dumps(message).decode())
            except ConnectionError:
                pass  # the client left; what it sent is still written


def _request_token(request: web.Request) -> str:
    """A client token given with the connection request (``Authorization: Bearer``, ``?token=``)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else request.query.get("token", "")


def _string(event: dict, field: str) -> str:
    value = event.get(field)
    if not isinstance(value, str):
        raise RejectedEvent("wrong_type", f'"{field}" must be a string, not {_json_type(value)}')
    return value
