# mtnas — the two commands a new user needs are `make demo` and `make test`.
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen

.PHONY: help install demo test test-fast lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv

# --compile-bytecode: .pyc files up front. Where PYTHONDONTWRITEBYTECODE is set (as on our machines) Python
# would otherwise recompile torch's and torchmetrics' sources on every start-up: ~10 s per `mtnas` run.
install: $(UV)  ## create .venv with every dependency (uv sync, from uv.lock)
	$(UV) sync --frozen --compile-bytecode

demo: install  ## run the built-in demo end to end on the CPU (a few minutes)
	$(RUN) mtnas +experiment=demo

test: install  ## run the test suite
	$(RUN) pytest -q -n auto --maxprocesses=4 --durations=15

test-fast: install  ## the tests that do not start the CLI or train end to end
	$(RUN) pytest -q -n auto --maxprocesses=4 -m "not slow"

lint: install  ## ruff: lint + format check
	$(RUN) ruff check src tests experiments
	$(RUN) ruff format --check src tests experiments

format: install  ## ruff: fix what can be fixed
	$(RUN) ruff check --fix src tests experiments
	$(RUN) ruff format src tests experiments

bench: install  ## performance benchmarks (tables of ratios; see experiments/bench/README.md)
	$(RUN) python experiments/bench/run_all.py

clean:  ## remove run outputs and caches (not the synthetic data cache in ~/.cache/mtnas)
	rm -rf outputs multirun .pytest_cache .ruff_cache dist
