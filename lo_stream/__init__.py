"""lo_stream: learning analytics on a streaming stack.

Events land in Kafka topics; Faust agents run per-student reducers over RocksDB-backed tables;
a query layer joins tables with rosters; Panel dashboards update live.
"""

__version__ = "0.1.0"
