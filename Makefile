# echoflow — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TOOLS ?= .tools
UV_VERSION ?= 0.13.9
# helm, kubectl and kind from PATH when present, else fetched into $(TOOLS) by `make tools`.
HELM ?= $(shell command -v helm 2>/dev/null || echo $(CURDIR)/$(TOOLS)/helm)
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(CURDIR)/$(TOOLS)/kubectl)
KIND ?= $(shell command -v kind 2>/dev/null || echo $(CURDIR)/$(TOOLS)/kind)
export HELM KUBECTL KIND

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REVISION := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# The image tag is the package version, which is the chart's appVersion (its default image
# tag): what `make image` builds, `make image-push` and the release workflow publish.
# REGISTRY=ghcr.io/org pushes ghcr.io/org/echoflow:<version>; IMAGE_TAG=... for other builds.
REGISTRY ?=
IMAGE_REPO ?= $(if $(REGISTRY),$(REGISTRY)/echoflow,echoflow)
IMAGE_TAG ?= $(VERSION)
IMAGE ?= $(IMAGE_REPO):$(IMAGE_TAG)
BASE_IMAGE ?=
CA_BUNDLE ?=
CHART_DIR := charts/echoflow
CHART_REPO ?=
KIND_CLUSTER ?= echoflow
DATA ?= data
OUT ?= out
export IMAGE IMAGE_REPO IMAGE_TAG VERSION REVISION BASE_IMAGE CA_BUNDLE KIND_CLUSTER CHART_REPO

.PHONY: help
help: ## List the targets (colour only on a terminal)
	@if [ -t 1 ]; then c='\033[36m'; r='\033[0m'; else c=; r=; fi; \
	awk -v c="$$c" -v r="$$r" 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %s%-14s%s %s\n", c, $$1, r, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"
	# --compile-bytecode: imports read .pyc even where PYTHONDONTWRITEBYTECODE is set (3x faster start)
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -c constraints.txt -e '.[test]'
	touch $@

.PHONY: install
install: $(BIN)/.installed ## Create .venv with the pinned dependency set (constraints.txt)

.PHONY: demo
demo: install ## Convert the sample EK60 and AZFP files in data/ into ./out (no server needed)
	$(BIN)/echoflow convert $(DATA)/ek60/*.raw --sonar-model EK60 --out $(OUT)/ek60 --format zarr
	$(BIN)/echoflow convert $(DATA)/azfp/*.01A --sonar-model AZFP --xml $(DATA)/azfp/17030815.XML --out $(OUT)/azfp --format netcdf

.PHONY: lock
lock: install ## Re-resolve constraints.txt (then run `make test` before committing it)
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 --no-header -o constraints.txt

# Fetch the named tools that are neither on PATH nor in $(TOOLS) (scripts/fetch-tools.sh).
define fetch_missing
	@missing=""; for t in $(1); do command -v $$t >/dev/null || [ -x $(TOOLS)/$$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then scripts/fetch-tools.sh $(TOOLS) $$missing; fi
endef

.PHONY: tools
tools: ## Fetch helm, kubectl and kind (those not on PATH) into .tools, SHA-256 checked
	$(call fetch_missing,helm kubectl kind)

.PHONY: chart-tools
chart-tools: ## Fetch helm and kubectl only (what the tests need; no kind)
	$(call fetch_missing,helm kubectl)

.PHONY: lint
lint: install ## ruff (lint + format check) on the code, mypy on src/
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy src/echoflow

.PHONY: format
format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

# Test processes (pytest-xdist): each has its own Prefect and S3 servers. The tests wait on
# real processes much of the time, so 3 keep 2 cores busy. TEST_JOBS=0: one process.
TEST_JOBS ?= 3
PYTEST_PARALLEL := $(BIN)/pytest -n $(TEST_JOBS) --dist worksteal
# Markers (pyproject.toml; tests/conftest.py sets them by directory): what a test needs
# beyond the venv, and `slow` for the long real-process scenarios.
FAST_TESTS := not docker and not helm and not browser and not slow

.PHONY: test
test: install chart-tools lint ## Lint, then every test: in parallel, then the Docker ones (image, worker + API stand-in) in one process
	$(PYTEST_PARALLEL) -m "not docker"
	$(BIN)/pytest -m docker

.PHONY: test-fast
test-fast: install ## Every test that needs no Docker, helm or browser and is not marked slow (under 2 min on 2 cores)
	$(PYTEST_PARALLEL) -m "$(FAST_TESTS)"

.PHONY: bench
bench: install ## Benchmarks: sequential echopype vs process pool vs echoflow (prints ratios)
	$(BIN)/python benchmarks/convert_bench.py

.PHONY: image
image: ## Build the image $(IMAGE) (BASE_IMAGE=..., CA_BUNDLE=path for TLS-inspecting proxies)
	scripts/build-image.sh

.PHONY: image-push
image-push: ## Build and push $(IMAGE) (REGISTRY=registry.example/team; docker login first)
	@[ -n "$(REGISTRY)" ] || { echo "image-push: set REGISTRY, e.g. make image-push REGISTRY=ghcr.io/org (pushes <REGISTRY>/echoflow:$(IMAGE_TAG))" >&2; exit 2; }
	scripts/build-image.sh
	docker push $(IMAGE)

.PHONY: chart-lint
chart-lint: chart-tools ## helm lint the chart with its defaults and every k8s/values-*.yaml
	$(HELM) lint $(CHART_DIR) --strict
	for f in k8s/values-*.yaml; do $(HELM) lint $(CHART_DIR) --strict -f $$f || exit 1; done

.PHONY: chart-test
chart-test: install chart-tools ## Render, schema-validate and check the chart (no cluster)
	$(BIN)/pytest tests/chart

.PHONY: chart-package
chart-package: chart-tools ## Package the chart as a versioned .tgz + index.yaml, or push to CHART_REPO=oci://...
	scripts/chart-package.sh

.PHONY: kind-up
kind-up: ## Create the kind cluster from k8s/kind-config.yaml
	scripts/kind.sh up

.PHONY: kind-load
kind-load: ## Load $(IMAGE) into the kind cluster
	scripts/kind.sh load

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	scripts/kind.sh down

.PHONY: e2e
e2e: tools ## On kind: build, install chart + S3, convert the samples as Jobs, read them back (KEEP=1 keeps the cluster)
	scripts/e2e.sh

.PHONY: clean
clean: ## Remove build output (keeps .venv and .tools)
	rm -rf $(OUT) dist build .pytest_cache *.tgz index.yaml
