# lo_stream: the two commands the README promises, and their helpers.
#   make run    Kafka (embedded unless LO_STREAM_BROKER is set), a worker, the gateway,
#               the dashboards and a simulated class (development mode)
#   make test   install if needed, then the whole suite against a real broker
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LO := $(VENV)/bin/lo-stream
STAMP := $(VENV)/.installed

.PHONY: install run test kafka kafka-stop bench-latency clean

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

# Event -> change-feed subscriber latency (docs/benchmarks.md); BENCH_ARGS="--rate 1000".
bench-latency: install
	$(PY) bench/change_feed_latency.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
