# leuk-lightning tasks. Everything runs inside the virtual environment $(VENV) (created by `install`).
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= histotnet_resnet18_l2
PYTEST_ARGS ?= -n 2

.PHONY: help install test test-fast lint format demo sweep report bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*?## "}; {printf "%-10s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY) ## create .venv and install the project with its dev tools
	$(PY) -m pip install -e ".[dev]"

test: ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: ## skip the end-to-end tests marked slow
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

lint: ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: ## ruff format + lint fixes
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

demo: ## the main job on generated demo data (CPU, a few minutes)
	$(PY) -m leuk_lightning +experiment=$(EXPERIMENT) debug=demo

sweep: ## label levels x backbones on the demo data
	$(PY) -m leuk_lightning -m +experiment=$(EXPERIMENT) debug=demo data.label_level=1,2,3 model=resnet18,vgg16

report: ## aggregate the newest multirun into a results table
	$(PY) -m leuk_lightning report $$(ls -dt logs/*/multiruns/* | head -n 1)

BENCHMARKS ?= data_pipeline lightning_overhead greedy_step tta_throughput end_to_end
bench: ## speed benchmarks, each printing ratios measured in one run (see benchmarks/RESULTS.md)
	for b in $(BENCHMARKS); do $(PY) benchmarks/$$b.py || exit 1; done
	$(PY) benchmarks/dataset_load.py --images 1000  # the 10,000-image figure: --images 10000

clean: ## remove caches and build outputs
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
