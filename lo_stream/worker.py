"""A worker process: the engine, and on its web port the query API, ``/metrics`` and ``/healthz``.

    lo-stream worker

As a build lane (``settings.build_lane``, set by ``lo-stream replay --as-version``) it runs one
reducer version in a consumer group of its own and serves no queries (see `lo_stream.replay`).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lo_stream.agents.engine import Engine
from lo_stream.agents.metrics import WorkerMetrics
from lo_stream.modules import Module, ModuleLoadError, load_modules
from lo_stream.query.exports import ExportCatalog
from lo_stream.query.language import QueryError
from lo_stream.query.server import QueryService, install_query_api
from lo_stream.reducers import Reducer, registry
from lo_stream.replay import build_group, build_lane
from lo_stream.settings import Settings

__all__ = ["Worker", "run_worker", "worker_reducers"]

logger = logging.getLogger(__name__)


def worker_reducers(settings: Settings) -> tuple[list[Module], list[Reducer]]:
    """The installed modules, and the reducers a worker runs: a build lane's one version, the
    modules named by ``LO_STREAM_MODULES``, or every installed reducer."""
    modules = load_modules(only=settings.module_names)
    lane = build_lane(settings, registry)
    if lane:
        return modules, [lane]
    # With LO_STREAM_MODULES, only the named modules' reducers run, whatever else was imported.
    return modules, [r for module in modules for r in module.reducers] if settings.module_names else list(registry)


class Worker:
    """One worker: its engine and its web server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        modules, reducers = worker_reducers(settings)
        lane = reducers[0] if settings.build_lane else None
        group = build_group(settings, lane.id, lane.version) if lane else settings.app_id
        self.url = f"http://{settings.bind_host}:{settings.worker_port}"
        self.metrics = WorkerMetrics()
        self.engine = Engine(
            settings, reducers, self.metrics, group=group,
            directory=settings.data_dir / ("build" if lane else "worker") / "tables", url=self.url,
        )
        self.web = web.Application()
        self.web.router.add_get("/metrics", self._metrics)
        self.web.router.add_get("/healthz", self._health)
        self.query: QueryService | None = None
        if not lane:
            try:
                catalog = ExportCatalog(modules, registry)
            except QueryError as exc:
                raise ModuleLoadError(str(exc)) from None
            self.query = install_query_api(self.web, settings, self.engine, reducers, catalog, self.metrics.registry)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        restored = self.engine.restored.is_set()
        return web.json_response({"worker": self.settings.group_instance_id, "restored": restored})

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve and process until `stopping` is set; then commit, leave the group and stop."""
        runner = web.AppRunner(self.web, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.bind_host, self.settings.worker_port).start()
        query = asyncio.create_task(self.query.run()) if self.query else None
        if query is not None:  # the query API cannot start (or stops): the worker stops too, and says why
            query.add_done_callback(lambda task: task.cancelled() or task.exception() is None or stopping.set())
        try:
            await self.engine.start()
            logger.info("worker serving on %s", self.url)
            await self.engine.run(stopping)
        finally:
            await self.engine.stop()
            if query is not None:
                query.cancel()
                await asyncio.gather(query, return_exceptions=True)
            await runner.cleanup()
        if query is not None and not query.cancelled() and query.exception() is not None:
            raise RuntimeError(f"the query API failed: {query.exception()}") from query.exception()


def run_worker(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT."""

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop(signum: signal.Signals) -> None:
            logger.info("%s received: committing, then leaving the group", signum.name)
            stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        await Worker(settings).run(stopping)

    asyncio.run(main())
