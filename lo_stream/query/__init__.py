"""The query layer: a JSON DAG language over tables and rosters (see DESIGN.md, step 5)."""
