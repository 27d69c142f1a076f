"""A simulated class: ``lo-stream simulate --students N [--ici 0.1] [--seed S] [--direct]``.

Responsibilities:

1. invent a class (names, e-mail ids, a course with a roster) from a seed, and load its roster so
   dashboards show names;
2. let every student type texts into several Google Docs at once, as the Google Docs extension
   reports it: one ``google_docs_save`` event per keystroke (``bundles[{commands: [{ty: "is", ibi,
   s}]}]``, the document as ``object`` with its title and URL, as LO's extension sends it), typos
   corrected with a delete (``ty: "ds"``), gaps drawn from an exponential with mean `ici` seconds,
   now and then a pause, and once in a while a break of a few minutes (the dashboards show the
   student as idle);
3. send through the gateway's websocket (with the development identity) or straight to Kafka;
4. keep its own account of what each student typed, so that tables can be checked against it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lo_stream.connectors.producer import EventProducer
from lo_stream.connectors.rosters import roster_student, write_course
from lo_stream.envelopes import Identity, make_envelope
from lo_stream.settings import Settings

__all__ = ["SOURCE", "SimulatedStudent", "SimulationError", "invent_class", "simulate"]

logger = logging.getLogger(__name__)

SOURCE = "org.mitros.writing_analytics"
TYPO_PROBABILITY = 0.03
PAUSE_PROBABILITY = 0.005
BREAK_PROBABILITY = 0.0005  # per keystroke: about one break every few minutes of typing at ici 0.1 s
BREAK_SECONDS = (120.0, 300.0)  # long enough to show as idle on the dashboards
SWITCH_DOCUMENT_PROBABILITY = 0.01
CONNECT_WAIT_SECONDS = 30.0
DOCUMENTS_PER_STUDENT = 3

GIVEN_NAMES = (
    "Ana", "Bilal", "Chen", "Dara", "Elif", "Farah", "Gabriel", "Hana", "Ines", "Jamal", "Kenji", "Lena",
    "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Samir", "Tariq", "Uma", "Victor", "Wen", "Ximena",
    "Yusuf", "Zoe", "Amara", "Bruno", "Carmen", "Diego", "Esther", "Felix",
)
FAMILY_NAMES = (
    "Lima", "Okafor", "Nguyen", "Kowalski", "Haddad", "Schmidt", "Rossi", "Tanaka", "Moreau", "Ibrahim",
    "Silva", "Novak", "Patel", "Garcia", "Johansson", "Mensah", "Dubois", "Kim", "Costa", "Ferreira",
)
# Short essays the class writes (a few sentences each, drawn from in order).
SENTENCES = (
    "Rivers shape the land they cross.",
    "Over many years the water carves valleys and carries soil to the sea.",
    "Farmers have always settled near rivers because the ground there is rich.",
    "My favourite book this year was about a girl who builds a radio.",
    "She learns that patience matters more than clever tools.",
    "Recycling at school works only when every class takes part.",
    "We counted the bins and found that half of them held the wrong things.",
    "A good experiment changes one thing at a time.",
    "If you change two things, you cannot tell which one made the difference.",
    "The moon has no air, so footprints left there can last for millions of years.",
    "Music helps some people focus, while others need silence.",
    "I think homework should be shorter but happen more often.",
)
TYPO_KEYS = "qwertyuiopasdfghjklzxcvbnm"
TITLES = (
    "My argument", "Lab report", "Book review", "Persuasive essay", "Reading response", "Field notes",
    "Science journal", "Letter to the editor", "Short story", "Debate notes",
)


class SimulationError(RuntimeError):
    """The simulation cannot run as asked (e.g. the gateway refuses the development identity)."""


@dataclass
class SimulatedStudent:
    """One student: who they are, what they mean to write, and what they have written so far."""

    user_id: str  # as sent in test_framework_fake_identity
    given_name: str
    family_name: str
    plans: dict[str, str]  # doc_id -> the text the student means to write
    texts: dict[str, str] = field(default_factory=dict)  # doc_id -> the text as it stands
    titles: dict[str, str] = field(default_factory=dict)  # doc_id -> the document's title
    events: int = 0

    @property
    def identity(self) -> Identity:
        """Who the gateway says the student is: Learning Observer's test identity."""
        return Identity.test_case(self.user_id)

    @property
    def safe_user_id(self) -> str:
        return self.identity.safe_user_id

    def summary(self) -> dict:
        return {"user_id": self.user_id, "events": self.events, "documents": dict(self.texts),
                "titles": dict(self.titles)}

    def plan(self, doc_id: str, text: str, rng: random.Random) -> None:
        """Mean to write `text` in a new document, with a title."""
        self.plans[doc_id] = text
        self.titles[doc_id] = f"{rng.choice(TITLES)} ({len(self.plans)})"


def invent_class(students: int, seed: int) -> list[SimulatedStudent]:
    """A class of `students`, the same for the same seed."""
    rng = random.Random(seed)
    names = [(g, f) for g in GIVEN_NAMES for f in FAMILY_NAMES]
    rng.shuffle(names)
    pupils = []
    for index in range(students):
        given, family = names[index % len(names)]
        user_id = f"{given}.{family}.{index}@example.edu".lower()
        pupil = SimulatedStudent(user_id, given, family, {})
        for number in range(DOCUMENTS_PER_STUDENT):
            start = rng.randrange(len(SENTENCES))
            pupil.plan(f"doc-{index}-{number}", " ".join(SENTENCES[(start + k) % len(SENTENCES)] for k in range(3)), rng)
        pupils.append(pupil)
    return pupils


class Typist:
    """What one student does next: the keystroke events, with the gaps between them."""

    def __init__(self, student: SimulatedStudent, rng: random.Random, ici: float) -> None:
        self.student = student
        self.rng = rng
        self.ici = ici
        self.document = next(iter(student.plans))
        self.typo_at: int | None = None  # position of a typo still to correct

    def next_gap(self) -> float:
        draw = self.rng.random()
        if draw < BREAK_PROBABILITY:  # steps away: idle for minutes, as students do
            return self.rng.uniform(*BREAK_SECONDS)
        if draw < PAUSE_PROBABILITY:
            return self.ici * self.rng.uniform(20, 60)
        return self.rng.expovariate(1 / self.ici)

    def next_event(self) -> dict:
        student = self.student
        if self.typo_at is None and (
            self.rng.random() < SWITCH_DOCUMENT_PROBABILITY or self._done(self.document)
        ):
            self._switch_document()
        text = student.texts.get(self.document, "")
        if self.typo_at is not None:
            command = {"ty": "ds", "si": self.typo_at, "ei": self.typo_at}
            text = text[: self.typo_at - 1] + text[self.typo_at:]
            self.typo_at = None
        else:
            if self.rng.random() < TYPO_PROBABILITY:
                character = self.rng.choice(TYPO_KEYS)
                self.typo_at = len(text) + 1
            else:
                character = student.plans[self.document][len(text)]
            command = {"ty": "is", "ibi": len(text) + 1, "s": character}
            text += character
        student.texts[self.document] = text
        student.events += 1
        return {
            "event": "google_docs_save",
            "source": SOURCE,
            "doc_id": self.document,
            "timestamp": int(time.time() * 1000),
            "bundles": [{"commands": [command]}],
            "object": {
                "type": "http://schema.learning-observer.org/writing-observer/",
                "id": self.document,
                "title": student.titles[self.document],
                "url": f"https://docs.google.com/document/d/{self.document}/edit",
            },
        }

    def _done(self, document: str) -> bool:
        return self.student.texts.get(document, "") == self.student.plans[document]

    def _switch_document(self) -> None:
        plans = self.student.plans
        unfinished = [d for d in plans if not self._done(d)]
        if not unfinished:  # everything written: start a new essay
            document = f"doc-{self.student.user_id.split('@')[0]}-{len(plans)}"
            self.student.plan(document, " ".join(self.rng.sample(SENTENCES, 3)), self.rng)
            unfinished = [document]
        self.document = self.rng.choice(unfinished)


async def simulate(
    settings: Settings,
    students: int,
    *,
    ici: float = 0.1,
    seed: int = 0,
    duration: float | None = None,
    direct: bool = False,
    course_id: str = "demo-class",
    course_name: str = "Demo class",
    teachers: tuple[str, ...] = ("teacher",),
    gateway_url: str | None = None,
) -> list[SimulatedStudent]:
    """Run a class for `duration` seconds (or until cancelled); return the students, with what
    they typed. Every event they sent is stored (acknowledged) when this returns."""
    pupils = invent_class(students, seed)
    roster = [
        roster_student(p.identity.user_id, p.given_name, p.family_name, email=p.user_id, key=p.safe_user_id)
        for p in pupils
    ]
    await write_course(settings, {"course_id": course_id, "name": course_name, "teachers": list(teachers)}, roster)
    rngs = [random.Random(f"{seed}-{index}") for index in range(students)]
    typists = [Typist(pupil, rng, ici) for pupil, rng in zip(pupils, rngs)]
    if direct:
        sessions: Any = DirectSessions(settings)
    else:
        url = gateway_url or f"ws://{settings.bind_host}:{settings.gateway_port}/wsapi/in/"
        sessions = GatewaySessions(url)
    async with sessions:
        tasks = [asyncio.create_task(_type(typist, sessions)) for typist in typists]
        try:
            done, _ = await asyncio.wait(tasks, timeout=duration, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed student (e.g. refused by the gateway) fails the run
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return pupils


async def _type(typist: Typist, sessions: Any) -> None:
    session = await sessions.open(typist.student)
    while True:
        await asyncio.sleep(typist.next_gap())
        await session.send(typist.next_event())


class DirectSessions:
    """Students writing straight to the events topic (no gateway)."""

    def __init__(self, settings: Settings) -> None:
        self.producer = EventProducer(settings)
        self.pending: list[asyncio.Future] = []

    async def __aenter__(self) -> "DirectSessions":
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*self.pending)
        await self.producer.stop()

    async def open(self, student: SimulatedStudent) -> "DirectSessions._Session":
        return self._Session(self, student.identity)

    class _Session:
        def __init__(self, sessions: "DirectSessions", identity: Identity) -> None:
            self.sessions, self.identity = sessions, identity

        async def send(self, event: dict) -> None:
            envelope = make_envelope(event, self.identity, executable="lo_stream.simulator")
            self.sessions.pending.extend(
                await self.sessions.producer.queue_envelopes(self.identity.safe_user_id, [envelope])
            )


class GatewaySessions:
    """Students connected to the gateway's websocket with the development identity."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http: aiohttp.ClientSession | None = None
        self.sessions: list[GatewaySessions._Session] = []

    async def __aenter__(self) -> "GatewaySessions":
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            # Wait until the gateway has stored every event sent.
            await asyncio.gather(*(session.drain() for session in self.sessions))
        finally:
            for session in self.sessions:
                await session.ws.close()
            await self.http.close()

    async def open(self, student: SimulatedStudent, wait: float = CONNECT_WAIT_SECONDS) -> "GatewaySessions._Session":
        deadline = time.monotonic() + wait
        while True:
            try:
                ws = await self.http.ws_connect(self.url)
                break
            except aiohttp.ClientError as exc:
                if time.monotonic() > deadline:
                    raise SimulationError(
                        f"cannot reach the gateway at {self.url} ({exc}): start it (lo-stream gateway "
                        "--insecure-identity) or simulate with --direct"
                    ) from None
                await asyncio.sleep(0.5)  # e.g. started together with the gateway
        session = self._Session(ws)
        self.sessions.append(session)
        await session.send_frame({"event": "lock_fields", "fields": {"source": SOURCE}})
        await session.send_frame({"event": "test_framework_fake_identity", "user_id": student.user_id})
        await session.authenticated.wait()
        if session.error:
            raise SimulationError(session.error)
        return session

    class _Session:
        def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
            self.ws = ws
            self.sent = 0
            self.acked = 0
            self.error: str | None = None
            self.authenticated = asyncio.Event()
            self.progress = asyncio.Event()
            self.reader = asyncio.create_task(self._read())

        async def send(self, event: dict) -> None:
            if self.error:
                raise SimulationError(self.error)
            await self.send_frame(event)

        async def send_frame(self, frame: dict) -> None:
            self.sent += 1
            await self.ws.send_str(json.dumps(frame))

        async def drain(self, timeout: float = 60) -> None:
            async with asyncio.timeout(timeout):
                while True:
                    self.progress.clear()  # before the check: an ack arriving after it wakes us
                    if self.acked >= self.sent or self.error or self.ws.closed:
                        break
                    await self.progress.wait()
            if self.acked < self.sent:
                raise SimulationError(f"the gateway acknowledged {self.acked} of {self.sent} frames: {self.error}")

        async def _read(self) -> None:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                reply = json.loads(message.data)
                if reply.get("status") == "auth":
                    self.authenticated.set()
                elif reply.get("status") == "ack":
                    self.acked = reply["seq"]
                elif reply.get("status") == "error":
                    self.error = f"the gateway refused an event: {reply.get('message')}"
                    if reply.get("reason") == "insecure_identity_disabled":
                        self.error = (
                            "the gateway refuses the development identity: start it with --insecure-identity "
                            "(LO_STREAM_GATEWAY_INSECURE_IDENTITY=true), or simulate with --direct"
                        )
                    self.authenticated.set()
                self.progress.set()
            self.error = self.error or "the gateway closed the connection"
            self.authenticated.set()
            self.progress.set()
