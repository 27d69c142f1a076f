"""Panel apps for teachers, installed as ``lo_stream.dashboards`` (see DESIGN.md, step 6)."""
