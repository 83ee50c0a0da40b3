# segrec: every target is a thin call into the `segrec` CLI (see `segrec --help`).
# Usage: make <target> [SIZE=tiny|small|medium|large] [INPUT=path FORMAT=...] [SEED=n]

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PYTHON      ?= python3
UV_VERSION  := 0.13.8
UV          := $(PYTHON) -m uv
SEGREC      := $(VENV)/bin/segrec
# Debian packages the tests and demo need; `make setup` installs the missing ones.
APT_PACKAGES := redis-server chromium chromium-driver

SIZE   ?=
SEED   ?=
INPUT  ?=
FORMAT ?=
MAP    ?=
PYTEST_ARGS ?=
UPDATE ?=
PORT   ?= 3000
SERVE  ?=

DATA_ARGS := $(if $(SIZE),--size $(SIZE)) $(if $(SEED),--seed $(SEED)) \
	$(if $(INPUT),--input $(INPUT) --format $(or $(FORMAT),canonical)) \
	$(foreach m,$(MAP),--map $(m))

BENCH_SIZES ?= small,medium
BENCH_EVENTS ?= 1e5,1e6
BENCH_CATALOGUES ?= 10000,100000,1000000
BENCH_FACTORS ?= 32,64,128
BENCH_REPEATS ?= 3
BENCH_TIME_BOX ?= 25
BENCH_ONLY ?=
BENCH_SERVING_ARGS ?=
PROFILE ?= smoke
HOST    ?=
LOADTEST_ARGS ?=
# checkov (make k8s) lives in its own environment: its pins conflict with uv.lock.
TOOLS_VENV ?= .venv-tools
CHECKOV    := $(TOOLS_VENV)/bin/checkov

.PHONY: help setup demo test data features segments train evaluate ab-report serve bento image image-smoke image-training image-training-smoke bench bench-serving loadtest soak k8s lint typecheck clean

help: ## Show each target with its one-line description
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: SIZE=tiny|small|medium|large SEED=n INPUT=path FORMAT=canonical|online-retail|movielens MAP='src=dst ...'"

setup: $(VENV)/.installed ## Create .venv from uv.lock and install missing Debian packages (idempotent)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	@command -v kubectl >/dev/null 2>&1 || echo "note: kubectl not found; make k8s and tests/test_k8s*.py need kubectl >= 1.27 \
	(kustomize v5 built in): see 'Tools' in k8s/README.md for how to install it"

$(VENV)/.installed: pyproject.toml uv.lock
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q "uv==$(UV_VERSION)"
	$(UV) sync --locked --python $(PYTHON)
	@touch $@
	@echo "Installed the locked environment into $(VENV)"

demo: setup build/requirements-serving.txt ## Run everything end to end: data to a served Bento, storefront demo and console URLs (SERVE=1 keeps it up)
	$(SEGREC) demo $(if $(SERVE),--serve)

data: setup ## Generate synthetic data (SIZE=) or import INPUT= FORMAT=, then clean it
	$(SEGREC) data $(DATA_ARGS)

features: setup ## Compute features, feast apply, materialise to the online store (SQLite or Redis)
	$(SEGREC) features

segments: setup ## Segment customers (k by stability), name and version them, write to Feast; UPDATE=1 for incremental
	$(SEGREC) segments $(if $(UPDATE),--update)

train: setup ## Fit models, blend weights per segment, evaluate, export the bundle and customer factors
	$(SEGREC) train

evaluate: setup ## Evaluate every model and the blend (SEGREC_EVAL_PROTOCOL=temporal|leave_last_n_out|random_ratio)
	$(SEGREC) evaluate

ab-report: setup ## A/B report: per experiment and variant CTR, conversion, revenue, CIs, p-values, SRM -> reports/ab/
	$(SEGREC) ab-report

serve: setup ## Serve recommendations over HTTP on PORT (default 3000) with the newest bundle
	BENTOML_HOME=$${BENTOML_HOME:-$${SEGREC_BENTOML_HOME:-$${SEGREC_DATA_DIR:-data}/bentoml}} \
		$(VENV)/bin/bentoml serve serving.service:Segrec --host 0.0.0.0 --port $(PORT)

bento: setup build/requirements-serving.txt ## Build the serving Bento: service, feature repo, newest bundle, serving deps only
	$(SEGREC) bento

# The Bento's requirements: base + feast + bentoml from the lock file, nothing for training.
build/requirements-serving.txt: pyproject.toml uv.lock
	@mkdir -p build
	$(UV) export --locked --no-default-groups --group features --group serving \
		--no-emit-project --no-hashes --format requirements-txt -q -o $@

image: bento ## Container image localhost/segrec-serving:<version> via buildah (no Docker): prints id, size, layers
	$(VENV)/bin/python -m serving.container build --uv-version $(UV_VERSION)

image-smoke: setup ## Start the image on the trained data/: /readyz, /recommend, /events, /metrics; start-up time, size
	$(VENV)/bin/python -m serving.container smoke

# The training image's requirements: base + training + features + serving (`segrec train`
# saves the bundle as a BentoML model) from the lock file, hashed; no load-test or dev group.
build/requirements-training.txt: pyproject.toml uv.lock
	@mkdir -p build
	$(UV) export --locked --no-default-groups --group training --group features --group serving \
		--no-emit-project --format requirements-txt -q -o $@

image-training: setup build/requirements-training.txt ## Jobs' image localhost/segrec-training:<version> via buildah: prints id, size, layers
	$(VENV)/bin/python -m training.container build --uv-version $(UV_VERSION)

image-training-smoke: setup ## Run the k8s jobs' commands (feast apply, materialise, retrain) in that image on data/
	$(VENV)/bin/python -m training.container smoke

bench: setup ## Benchmarks -> reports/bench.{json,html}: data layer, online reads, scoring scale, training stages (BENCH_EVENTS=1e5,1e6,1e7 ...)
	OPENBLAS_NUM_THREADS=1 $(SEGREC) bench --sizes $(BENCH_SIZES) --events $(BENCH_EVENTS) \
		--catalogues $(BENCH_CATALOGUES) --factors $(BENCH_FACTORS) --repeats $(BENCH_REPEATS) \
		--time-box $(BENCH_TIME_BOX) $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

bench-serving: setup ## /recommend p50/p99 at 50 and 200 RPS and max throughput, BentoML vs bare Starlette, one worker (needs make train)
	$(VENV)/bin/python -m loadtests.latency $(BENCH_SERVING_ARGS)

loadtest: setup ## Locust storefront load as a gate: PROFILE=smoke|steady|step [HOST=url]; starts a server when none answers
	$(VENV)/bin/python -m loadtests.run --profile $(PROFILE) $(if $(HOST),--host $(HOST)) $(LOADTEST_ARGS)

soak: setup ## 10 min of the storefront mix at 200 req/s with /readyz polled every second, worker RSS and fds watched (not in make test)
	$(VENV)/bin/python -m loadtests.soak $(if $(HOST),--host $(HOST)) $(SOAK_ARGS)

k8s: setup $(CHECKOV) ## Render k8s overlays (dev, staging, prod) into build/k8s/ and validate: schemas, checkov, own checks
	$(VENV)/bin/python -m k8s.validate --checkov $(CHECKOV)
	$(VENV)/bin/pytest -q tests/test_k8s.py -m "not slow"

$(CHECKOV): k8s/checkov-requirements.txt
	$(UV) venv -q --allow-existing --python $(PYTHON) $(TOOLS_VENV)
	$(UV) pip install -q --python $(TOOLS_VENV)/bin/python -r k8s/checkov-requirements.txt
	@touch $@

lint: setup ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup ## mypy on the packages
	$(VENV)/bin/mypy

test: setup lint typecheck build/requirements-serving.txt $(CHECKOV) ## Lint, type-check and run the whole test suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean: ## Remove generated data and reports (keeps .venv)
	rm -rf data reports .pytest_cache .mypy_cache .ruff_cache
