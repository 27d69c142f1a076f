"""The Faust app of a deployment, configured from `lo_stream.settings`.

``faust -A lo_stream.app worker`` and ``lo-stream worker`` both run this module's `app`.
"""

from __future__ import annotations

import faust

from lo_stream.agents import install_agents
from lo_stream.agents.consumer import ExactConsumer
from lo_stream.agents.delivery import track_deliveries
from lo_stream.agents.metrics import WorkerMetrics
from lo_stream.agents.transactions import SourceTransactions
from lo_stream.modules import Module, ModuleLoadError, load_modules
from lo_stream.query.exports import ExportCatalog
from lo_stream.query.language import QueryError
from lo_stream.query.server import install_query_api
from lo_stream.reducers import Reducer, registry
from lo_stream.replay import build_group, build_lane
from lo_stream.settings import Settings, load_settings
from lo_stream.tables.recovery import SeekFirstTableManager

__all__ = ["app", "create_app", "worker_reducers"]


class _App(faust.App):
    """Faust's app, with commits that wait for the table writes they cover (`lo_stream.agents.delivery`),
    a consumer that hands out no record it then drops (`lo_stream.agents.consumer`) and, under
    exactly-once, records sent in the transaction of the event that caused them and producers that
    follow the assignment (`lo_stream.agents.transactions`)."""

    def _new_producer(self) -> faust.types.ProducerT:
        return track_deliveries(super()._new_producer())

    def _new_transport(self) -> faust.types.TransportT:
        transport = super()._new_transport()
        transport.Consumer = ExactConsumer
        transport.TransactionManager = SourceTransactions
        return transport


def worker_reducers(settings: Settings) -> tuple[list[Module], list[Reducer]]:
    """The installed modules, and the reducers a worker runs: a build lane's one version, the
    modules named by ``LO_STREAM_MODULES``, or every installed reducer."""
    modules = load_modules(only=settings.module_names)
    lane = build_lane(settings, registry)
    if lane:
        return modules, [lane]
    # With LO_STREAM_MODULES, only the named modules' reducers run, whatever else was imported.
    return modules, [r for module in modules for r in module.reducers] if settings.module_names else list(registry)


def create_app(settings: Settings) -> faust.App:
    """Build a Faust app running the reducers of the installed modules, each with its table, and
    serving the modules' queries. As a build lane (``settings.build_lane``) it runs one reducer
    version in a consumer group of its own and serves no queries (see `lo_stream.replay`)."""
    modules, reducers = worker_reducers(settings)
    lane = reducers[0] if settings.build_lane else None
    app_id = build_group(settings, lane.id, lane.version) if lane else settings.app_id
    datadir = settings.data_dir / ("build" if lane else "worker")
    datadir.mkdir(parents=True, exist_ok=True)  # Faust does not create it
    app = _App(
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
        # Faust's default (0) sends each changelog record in a produce request of its own: one
        # socket write per event. 10 ms batches them (docs/benchmarks.md). Commits still wait for
        # the records they cover (lo_stream.agents.delivery).
        producer_linger_ms=10,
        processing_guarantee=settings.processing_guarantee,
        # Source partitions are fetched only once seeked to their commits (lo_stream.tables.recovery).
        TableManager=SeekFirstTableManager,
    )
    metrics = WorkerMetrics(app)
    tables = install_agents(app, settings, reducers, metrics)
    if lane:
        return app
    try:
        catalog = ExportCatalog(modules, registry)
    except QueryError as exc:
        raise ModuleLoadError(str(exc)) from None
    install_query_api(app, settings, tables, reducers, catalog, metrics.registry)
    return app


app = create_app(load_settings())
