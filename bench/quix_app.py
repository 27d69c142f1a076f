"""The workshop reducer as a Quix Streams app with RocksDB state (and its changelog topic).

    python bench/quix_app.py --broker HOST:PORT --topic T --group G --state-dir DIR \
        [--guarantee at-least-once|exactly-once] [--commit-interval 1]

A message holds one envelope or a list of one student's envelopes; the app folds them all into
the student's state (one state read and one write per message, as lo_stream and the raw loop
do). Runs until SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

from quixstreams import Application, State

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import competitor_parser  # noqa: E402
from bench.workshop import NULL_STATE, workshop  # noqa: E402


def fold_message(value: dict | list, state: State) -> None:
    student = state.get("workshop", NULL_STATE)
    for envelope in value if isinstance(value, list) else (value,):
        student = workshop(envelope, student)
    state.set("workshop", student)


def main() -> None:
    parser = competitor_parser(__doc__.split("\n")[0])
    parser.add_argument("--guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once")
    args = parser.parse_args()
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    events = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
    app.dataframe(events).update(fold_message, stateful=True)
    app.run()


if __name__ == "__main__":
    main()
