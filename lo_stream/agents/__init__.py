"""The engine: lo_stream's own, on aiokafka and rocksdict, with fetched batches as its unit of work.

- `lo_stream.agents.engine`: consume batches, run the reducers, write the tables, commit;
- `lo_stream.agents.outbox`: the records a worker writes, and the barrier every commit waits at
  (at-least-once, or exactly-once with a Kafka transaction per source partition);
- `lo_stream.agents.assignor`: partition numbers spread over the workers, and who holds which;
- `lo_stream.agents.membership`: leaving the group as a static member;
- `lo_stream.agents.metrics`: the worker's Prometheus metrics.

docs/engine.md says why it is built this way and what it guarantees.
"""
