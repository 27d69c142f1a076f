"""lo_stream: learning analytics on a streaming stack.

Events land in Kafka topics; a batch engine runs per-student reducers over RocksDB-backed tables;
a query layer joins tables with rosters; Panel dashboards update live.

The researcher's API::

    from lo_stream import student_event_reducer

    @student_event_reducer(null_state={"count": 0})
    async def student_event_counter(event, state):
        return {"count": state["count"] + 1}
"""

from lo_stream.reducers import STUDENT, UNCHANGED, event_reducer, student_event_reducer

__all__ = ["STUDENT", "UNCHANGED", "event_reducer", "student_event_reducer"]
__version__ = "0.1.0"
