# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-actlake

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: 2.13.0 is the CPU build on disk; any other version pulls gigabytes.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/actlake demo --out demo-data/synthetic
	$(VENV)/bin/actlake info demo-data/synthetic

lint: $(STAMP)
	$(VENV)/bin/ruff check shards ingest analysis cluster tests

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) tests/benchmarks/bench_reader.py --dims 768 4096 --gb 1.1 --s3 --s3-gb 0.25 --plot docs/benchmarks_reader.png

clean:
	rm -rf $(VENV) demo-data bench-data
