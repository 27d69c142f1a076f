"""The Faust app of a deployment, configured from `lo_stream.settings`.

``faust -A lo_stream.app worker`` and ``lo-stream worker`` both run this module's `app`.
"""

from __future__ import annotations

import logging

import faust

from lo_stream.agents import install_agents
from lo_stream.agents.metrics import WorkerMetrics
from lo_stream.modules import ModuleLoadError, load_modules
from lo_stream.query.exports import ExportCatalog
from lo_stream.query.language import QueryError
from lo_stream.query.server import install_query_api
from lo_stream.reducers import registry
from lo_stream.replay import build_group, build_lane
from lo_stream.settings import Settings, load_settings

__all__ = ["app", "create_app"]

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build a Faust app running the reducers of every installed module, each with its table, and
    serving the modules' queries. As a build lane (``settings.build_lane``) it runs one reducer
    version in a consumer group of its own and serves no queries (see `lo_stream.replay`)."""
    modules = load_modules()
    lane = build_lane(settings, registry)
    app_id = build_group(settings, lane.id, lane.version) if lane else settings.app_id
    datadir = settings.data_dir / ("build" if lane else "worker")
    datadir.mkdir(parents=True, exist_ok=True)  # Faust does not create it
    app = faust.App(
        app_id,
        broker=settings.faust_broker,
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_bind=settings.bind_host,
        web_port=settings.worker_port,
        web_host=settings.bind_host,
        # Faust's /table/ pages would publish every student's state without authentication.
        web_tables_enabled=False,
        consumer_auto_offset_reset="earliest",
        processing_guarantee=settings.processing_guarantee,
    )
    if settings.processing_guarantee == "exactly_once":
        logger.warning(
            "LO_STREAM_PROCESSING_GUARANTEE=exactly_once is experimental: with faust-streaming 0.15.3 tables "
            "can miss events across restarts (docs/engine.md). The default, at_least_once, keeps them exact."
        )
    metrics = WorkerMetrics(app)
    if lane:
        install_agents(app, settings, [lane], metrics)
        return app
    try:
        catalog = ExportCatalog(modules, registry)
    except QueryError as exc:
        raise ModuleLoadError(str(exc)) from None
    tables = install_agents(app, settings, registry, metrics)
    install_query_api(app, settings, tables, list(registry), catalog, metrics.registry)
    return app


app = create_app(load_settings())
