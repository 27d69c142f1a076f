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
from lo_stream.settings import Settings, load_settings

__all__ = ["app", "create_app"]

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build a Faust app running the reducers of every installed module, each with its table, and
    serving the modules' queries."""
    datadir = settings.data_dir / "worker"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust does not create it
    app = faust.App(
        settings.app_id,
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
        # Faust's default (0) sends each changelog record in a produce request of its own as soon
        # as it is written: one socket write per event. 10 ms batches them (bench: 620 -> 860
        # events/s, one event per message; docs/benchmarks.md).
        producer_linger_ms=10,
        processing_guarantee=settings.processing_guarantee,
    )
    if settings.processing_guarantee == "exactly_once":
        logger.warning(
            "LO_STREAM_PROCESSING_GUARANTEE=exactly_once is experimental: with faust-streaming 0.15.3 tables "
            "can miss events across restarts (docs/engine.md). The default, at_least_once, keeps them exact."
        )
    modules = load_modules(only=settings.module_names)
    try:
        catalog = ExportCatalog(modules, registry)
    except QueryError as exc:
        raise ModuleLoadError(str(exc)) from None
    # With LO_STREAM_MODULES, only the named modules' reducers run, whatever else was imported.
    reducers = [r for module in modules for r in module.reducers] if settings.module_names else list(registry)
    metrics = WorkerMetrics(app)
    tables = install_agents(app, settings, reducers, metrics)
    install_query_api(app, settings, tables, reducers, catalog, metrics.registry)
    return app


app = create_app(load_settings())
