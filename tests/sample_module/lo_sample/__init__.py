"""A small lo_stream module: per-document save counts, and reducers that fail on purpose."""

from lo_stream import event_reducer, student_event_reducer


@event_reducer(scope=("student", "doc_id"), null_state={"saves": 0}, events="google_docs_save")
def saves_per_document(event, state):
    return {"saves": state["saves"] + 1}


@student_event_reducer(null_state={"words": 0}, events="word_count")
async def fragile_word_total(event, state):
    # Raises on events without an integer "words": they must go to the dead-letter topic.
    return {"words": state["words"] + int(event["client"]["words"])}


@event_reducer(scope=("class_id",), null_state={"events": 0, "students": []})
def class_activity(event, state):
    """Per class (not per student): events seen and which students sent them."""
    student = event["metadata"]["auth"]["safe_user_id"]
    students = state["students"] if student in state["students"] else sorted(state["students"] + [student])
    return {"events": state["events"] + 1, "students": students}


@student_event_reducer(null_state={"events": 0, "deep": None}, events="word_count")
def kept_detail(event, state):
    """Keeps the last word count's ``deep`` field as it came: one that no JSON encoder writes back
    (nested too deep) makes a state that cannot be stored."""
    return {"events": state["events"] + 1, "deep": event["client"].get("deep")}
