# The two commands the README promises work from a clean clone: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench bench-full soak reliability-report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,convert,dask,postgresql]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# two workers, each test file whole on one (its module fixtures and its order kept): on
# two cores much of the suite waits on daemons, locks and deadlines, and the other worker
# fills that time; tests/conftest.py sends the longest files first (kept in that order:
# xdist would otherwise start the files with the most tests first)
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

demo: $(STAMP)
	$(PY) -m dsa110_ingest demo --dir demo-run

bench: $(STAMP)
	$(PY) benchmarks/index_throughput.py
	$(PY) benchmarks/live_latency.py
	$(PY) benchmarks/convert_group.py
	$(PY) benchmarks/convert_profile.py
	$(PY) benchmarks/dask_backfill.py
	$(PY) benchmarks/pg_backfill.py

# one group at real DSA-110 size (117 antennas, 16 x 48 channels, 4 pols: ~4 GiB in, ~6 GiB
# out), both backends; too big for CI. The pyuvdata side needs ~19 GB and runs only when
# >= 21 GB are available (else its figures are cited, labelled so, in docs/performance.md)
bench-full: $(STAMP)
	$(PY) benchmarks/convert_group.py --full

# a week of observations through the reliability suite; rewrites docs/reliability.md
soak: $(STAMP)
	rm -rf build/reliability
	DSA110_SOAK=week DSA110_RELIABILITY_REPORT=build/reliability \
		$(PY) -m pytest -q tests/reliability -p no:cacheprovider --timeout 7200
	$(PY) tests/reliability/report.py build/reliability docs/reliability.md week

# the same suite at one day's scale (make test runs a third of that), also rewriting the page
reliability-report: $(STAMP)
	rm -rf build/reliability
	DSA110_SOAK=day DSA110_RELIABILITY_REPORT=build/reliability $(PY) -m pytest -q tests/reliability \
		-p no:cacheprovider
	$(PY) tests/reliability/report.py build/reliability docs/reliability.md day

clean:
	rm -rf $(VENV) demo-run build *.egg-info src/*.egg-info
