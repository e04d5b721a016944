# AlexNet lab. `make help` lists the targets; ARGS passes Hydra overrides through, e.g.
#   make train ARGS="model.lrn=false trainer.max_epochs=5"
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
ARGS ?=
DATA ?= cifar10
CKPT ?=
export NO_ALBUMENTATIONS_UPDATE := 1

.DEFAULT_GOAL := help
.PHONY: help install train eval test test-real-data test-fast lint data data-stats bench imagenet-store

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install -q -e ".[dev,optuna]"
	touch $@

install: $(VENV)/.installed ## create .venv and install the package with its dev tools

train: install ## train (default: AlexNet-CIFAR on CIFAR-10, experiment=cifar10_alexnet)
	$(PYTHON) -m alexnet.train experiment=cifar10_alexnet $(ARGS)

eval: install ## evaluate a checkpoint: make eval CKPT=path/to.ckpt [ARGS="data=imagenet aug=paper aug.eval=ten_crop"]
	@test -n "$(CKPT)" || { echo "error: give the checkpoint, e.g. make eval CKPT=logs/.../checkpoints/last.ckpt"; exit 2; }
	$(PYTHON) -m alexnet.eval ckpt_path=$(CKPT) $(ARGS)

.PHONY: figures
figures: install ## the paper's figures for a checkpoint, into its run dir's figures/: make figures CKPT=path/to.ckpt
	@test -n "$(CKPT)" || { echo "error: give the checkpoint, e.g. make figures CKPT=logs/.../checkpoints/last.ckpt"; exit 2; }
	$(PYTHON) -m alexnet.figures ckpt_path=$(CKPT) $(ARGS)

# One pytest-xdist worker per core (at most four). `worksteal` starts each worker on a
# contiguous share of the suite (a file's tests stay together: module fixtures are built once)
# and lets an idle one take half of another's queue. One file runs plainly: pytest tests/...
PYTEST := $(PYTHON) -m pytest -q -n auto --maxprocesses 4 --dist worksteal

test: install ## run the test suite, one worker per core (all but the real-data test: make test-real-data)
	$(PYTEST) -m "not real_data" --durations=12 $(ARGS)

# Training on the real CIFAR-10 for 200 steps is the one test that cannot be cheaper (docs/tests.md):
# it runs on its own, on every core, after `make test` in CI.
test-real-data: install ## the test that trains on the real CIFAR-10 copy in data/ (skipped without it)
	$(PYTHON) -m pytest -q -m real_data --durations=1 $(ARGS)

test-fast: install ## the test suite without the slow tests
	$(PYTEST) -m "not slow" $(ARGS)

lint: install ## ruff: lint and formatting (what CI and the pre-commit hook check)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

data: install ## fetch CIFAR-10 into data/ (online) and compute its statistics
	$(PYTHON) -m alexnet.prepare task_name=prepare data=cifar10 data.download=true $(ARGS)

data-stats: install ## compute mean image + RGB eigens for DATA=cifar10|imagenet, cached beside the data
	$(PYTHON) -m alexnet.prepare task_name=prepare data=$(DATA) $(ARGS)

# -- the paper's ablations (alexnet.report; conf/experiment/{lrn_pool,towers,cifar_lrn,relu_vs_tanh})
# The sweep dir depends only on GRID and ARGS, so re-running the same command finishes an
# interrupted grid (finished jobs are skipped); SWEEP=dir picks it yourself.
GRID ?= lrn_pool
SWEEP ?=
.PHONY: ablate report

# The sweep dir names the grid: ARGS that change what runs add their checksum; how the jobs are
# launched (hydra.launcher.*, e.g. n_parallel) does not, so a grid resumes with either.
ABLATE_GRID_ARGS = $(strip $(filter-out hydra.launcher.%,$(ARGS)))
ablate: install ## a grid of runs, then its report: make ablate [GRID=lrn_pool|towers|cifar_lrn|relu_vs_tanh] [SWEEP=dir] [ARGS=...]
	@sweep="$(SWEEP)"; \
	if [ -z "$$sweep" ]; then \
	  sweep="$${LOG_DIR:-logs}/ablate/$(GRID)$(if $(ABLATE_GRID_ARGS),-$$(printf '%s\n' $(ABLATE_GRID_ARGS) | cksum | cut -d' ' -f1))"; \
	fi; \
	echo "sweep dir: $$sweep (run the same command again to finish an interrupted grid)"; \
	$(PYTHON) -m alexnet.train -m experiment=$(GRID) "hydra.sweep.dir=$$sweep" $(ARGS); sweep_rc=$$?; \
	$(PYTHON) -m alexnet.report "$$sweep" || exit $$?; \
	exit $$sweep_rc

report: install ## (re)write a sweep's report.md/csv/png: make report SWEEP=logs/ablate/lrn_pool
	@test -n "$(SWEEP)" || { echo "error: give the sweep dir, e.g. make report SWEEP=logs/ablate/lrn_pool"; exit 2; }
	$(PYTHON) -m alexnet.report $(SWEEP)

.PHONY: results
results: install ## rewrite the README's results table from the committed runs under results/
	$(PYTHON) -m alexnet.report.results_table results --readme README.md

.PHONY: bench-towers
bench-towers: install ## the towers' traffic per step and a towers vs grouped step on CPU (ARGS="--model alexnet")
	$(PYTHON) -m alexnet.bench.towers $(ARGS)

# -- speed ---------------------------------------------------------------------------------------
bench: install ## img/s of the training step, raw loop vs Lightning, LRN, input pipelines -> bench.json
	$(PYTHON) -m alexnet.bench $(ARGS)

.PHONY: test-gpu
test-gpu: install ## the CUDA-only tests (fast paths on the GPU vs the plain ones); skipped without CUDA
	$(PYTHON) -m pytest -q -m gpu $(ARGS)

imagenet-store: install ## once: ImageNet resized + centre-cropped to 256 into one JPEG file per split
	$(PYTHON) -m alexnet.prepare_store task_name=prepare_store data=imagenet $(ARGS)

.PHONY: check-data
check-data: install ## list images of DATA=cifar10|imagenet that training would skip or convert (no training)
	$(PYTHON) -m alexnet.check_data task_name=check_data data=$(DATA) $(ARGS)
