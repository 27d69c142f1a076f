"""Ways in and out of lo_stream, installed as ``lo_stream.connectors``: the local Kafka broker,
and (see DESIGN.md, step 1) the ingest gateway, log files, rosters and the simulator."""
