# lo_stream: the two commands the README promises, and their helpers.
#   make run    Kafka (embedded unless LO_STREAM_BROKER is set), a worker, the gateway,
#               the dashboards and a simulated class (development mode)
#   make test   install if needed, then the whole suite against a real broker
#   make bench  the benchmarks (quick; BENCH_ARGS=--full), docs/benchmarks.md
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LO := $(VENV)/bin/lo-stream
STAMP := $(VENV)/.installed

.PHONY: install install-bench run test kafka kafka-stop bench bench-latency screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("lo_stream needs Python 3.10+") if sys.version_info < (3, 10) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: install
	$(LO) run

# The suite starts its own broker on free ports (and stops it) unless LO_STREAM_BROKER
# names one; pytest's exit code is make's.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

kafka: install
	$(LO) kafka start

kafka-stop: install
	$(LO) kafka stop

# The bench extra (Quix Streams, py-spy, psutil) on top of the dev install; not needed by make test.
BENCH_STAMP := $(VENV)/.installed-bench

install-bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

# Every benchmark, quick (< 10 min) by default; BENCH_ARGS=--full for 1M events and 1M students
# (hours), BENCH_ARGS="--only throughput". Results in bench/results/, tables: docs/benchmarks.md.
bench: install-bench
	$(PY) -m bench $(BENCH_ARGS)

# Event -> change-feed subscriber latency (docs/benchmarks.md); BENCH_ARGS="--rate 1000".
bench-latency: install-bench
	$(PY) bench/change_feed_latency.py $(BENCH_ARGS)

# The dashboards' screenshots (docs/images/) from a real class: what make run brings up, a few minutes
# of writing, then Chromium. SCREENSHOT_ARGS="--students 30 --minutes 5".
screenshots: install
	$(PY) scripts/screenshots.py $(SCREENSHOT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
