# The verbs people type. Everything installs what it needs on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CACHE  ?= $(CURDIR)/.cache
BIN    := $(CACHE)/bin
CLUSTER := $(PY) tests/cluster/controlplane.py
KUBECONFIG_LOCAL := $(CACHE)/cluster/kubeconfig
KUBECTL := $(BIN)/kubectl --kubeconfig $(KUBECONFIG_LOCAL)
DEMO_NS ?= flywheel-demo
export FLYWHEEL_CACHE := $(CACHE)

.PHONY: help install cluster-bin cluster-up cluster-down services-bin services-up services-down \
        crds lint test demo demo-down operator-up operator-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv with the pinned Python stack

# pip 23 backtracks for tens of minutes over this stack; a current pip with the
# exact pins in pyproject.toml resolves it in a couple of minutes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade 'pip>=25'
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

cluster-bin: ## build the control-plane binaries from Go modules (cached)
	bash tests/cluster/build.sh
	bash tests/cluster/gateway_api.sh >/dev/null

cluster-up: install cluster-bin ## start etcd, kube-apiserver, controller-manager, scheduler, kwok
	@$(CLUSTER) up

cluster-down: operator-down ## stop the local control plane
	@$(CLUSTER) down

services-bin: ## build the S3-compatible object store (versitygw) from Go modules (cached)
	bash tests/services/build_s3.sh

services-up: install services-bin ## start the object store and an mlflow server on 127.0.0.1
	@$(PY) tests/services/mlflowserver.py up

services-down: ## stop mlflow and the object store (drops their data)
	@$(PY) tests/services/mlflowserver.py down; $(PY) tests/services/objectstore.py down

crds: install ## regenerate crds/ and the chart's copy from the pydantic models
	$(VENV)/bin/flywheel crds

lint: install ## ruff, import boundaries, and the CRDs are up to date
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/flywheel crds --check

test: install cluster-bin services-bin ## unit and integration tests against a real control plane
	$(PY) -m pytest tests

operator-up: cluster-up ## run the operator in the background against the local cluster
	@$(KUBECTL) apply --server-side -f crds/ >/dev/null
	@$(KUBECTL) wait --for condition=Established --timeout=60s -f crds/ >/dev/null
	@if [ -f $(CACHE)/operator.pid ] && kill -0 $$(cat $(CACHE)/operator.pid) 2>/dev/null; then \
	  echo "operator already running (pid $$(cat $(CACHE)/operator.pid))"; \
	else \
	  KUBECONFIG=$(KUBECONFIG_LOCAL) nohup $(VENV)/bin/flywheel run --log-format plain \
	    --liveness http://127.0.0.1:18080/healthz --metrics-address 127.0.0.1 --metrics-port 19090 \
	    > $(CACHE)/operator.log 2>&1 & echo $$! > $(CACHE)/operator.pid; \
	  echo "operator started (pid $$(cat $(CACHE)/operator.pid), log $(CACHE)/operator.log)"; \
	fi

operator-down: ## stop the background operator
	@if [ -f $(CACHE)/operator.pid ]; then kill $$(cat $(CACHE)/operator.pid) 2>/dev/null || true; rm -f $(CACHE)/operator.pid; fi

demo: operator-up ## local cluster + operator + the samples, then their status
	@$(KUBECTL) create namespace $(DEMO_NS) --dry-run=client -o yaml | $(KUBECTL) apply -f - >/dev/null
	$(KUBECTL) -n $(DEMO_NS) apply -k manifests/samples/
	@echo "waiting for the operator to report on every object ..."
	@for kind in datasets trainingruns modelversions inferenceservices; do \
	  $(KUBECTL) -n $(DEMO_NS) wait $$kind --all --for=jsonpath='{.status.observedGeneration}'=1 --timeout=60s >/dev/null; \
	done
	$(KUBECTL) -n $(DEMO_NS) get flywheel -o wide
	@echo
	@echo "Each object is Accepted; Ready waits on the workloads that later releases add."
	@echo "Try:  export KUBECONFIG=$(KUBECONFIG_LOCAL) PATH=$(BIN):\$$PATH"
	@echo "      kubectl -n $(DEMO_NS) describe inferenceservice iris"
	@echo "      kubectl explain trainingrun.spec.trainer"
	@echo "Metrics: http://127.0.0.1:19090/metrics   Stop: make demo-down"

demo-down: cluster-down ## stop the demo (operator and control plane)
