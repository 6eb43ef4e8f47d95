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
        crds lint test soak demo demo-down operator-up operator-down demo-runner demo-operator \
        helm-bin manifests image kind-up kind-load deploy bench bench-quick

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

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

helm-bin: ## build helm from its Go module (cached), for the chart's tests
	bash tests/cluster/build_helm.sh

manifests: helm-bin ## render the chart's defaults into manifests/operator.yaml (the kustomize base)
	bash tests/cluster/render_manifests.sh

lint: install ## ruff, import boundaries, and the CRDs are up to date
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/flywheel crds --check

test: install cluster-bin services-bin ## unit and integration tests against a real control plane
	$(PY) -m pytest tests

soak: install cluster-bin services-bin ## long runs: 10 min of model-server load, MLflow/S3 down a minute each, the operator over 2,000 objects
	FLYWHEEL_LOAD_SECONDS=600 FLYWHEEL_OUTAGE_SECONDS=60 $(PY) -m pytest -s \
	  tests/integration/test_model_server_load.py tests/integration/test_outages.py \
	  tests/integration/test_outages_workloads.py
	$(PY) -m pytest -m soak -s tests/integration/test_operator_soak.py

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
	@if [ -f $(CACHE)/operator.pid ]; then pid=$$(cat $(CACHE)/operator.pid); kill $$pid 2>/dev/null || true; \
	  for i in $$(seq 40); do kill -0 $$pid 2>/dev/null || break; sleep 0.5; done; rm -f $(CACHE)/operator.pid; fi

# ---------------------------------------------------------- the real node
# A single-node Kubernetes built here (tests/node/node.py): containerd, runc and
# Debian's CNI plugins, kubelet and kube-proxy from the pinned module, its own
# control plane in .cache/node/cluster (apart from `make test`'s). Needs root.
.PHONY: node-bin node-up node-down node-test

node-bin: ## build kubelet, kube-proxy, crictl, the pause and busybox images (cached)
	bash tests/cluster/build.sh
	bash tests/node/build_node.sh
	bash tests/node/base_images.sh

node-up: node-bin ## start the real node node-0 and its control plane; prints the kubeconfig
	@$(PYTHON) tests/node/node.py up

node-down: ## stop the real node; remove its pods, network, iptables rules and mounts
	@$(PYTHON) tests/node/node.py down

node-test: install node-bin ## pods, Services, logs, rollouts and exit codes on the real node
	FLYWHEEL_E2E=1 $(PY) -m pytest tests/node/test_node.py -v -s -p no:cacheprovider

# ---------------------------------------------------------------- benchmarks
# Every part against its peer, side by side in one run (tests/bench/README.md).
# The runner makes what it needs on first use: MLServer's pinned venv and the
# generated data under .cache/bench/, a private mlflow server per run; the
# operator-scale and loop parts start the local control plane (cluster-bin).
BENCH_ARGS ?=

bench: install cluster-bin services-bin ## all benchmarks (~45 min): tests/bench/results.{json,md}
	$(PY) tests/bench/run.py $(BENCH_ARGS)

# The smoke run writes beside the cache, so it never replaces the full results.
bench-quick: install cluster-bin services-bin ## a short smoke run of every part (~6 min), in .cache/bench/
	$(PY) tests/bench/run.py --quick --results $(CACHE)/bench/results-quick.json \
	  --markdown $(CACHE)/bench/results-quick.md $(BENCH_ARGS)

# ---------------------------------------------------------------- the demo
# `make demo` reuses a running control plane and services, restarts the pod
# runner and the operator (so they always point at what runs now), and starts
# the samples again in a fresh namespace $(DEMO_NS); running it twice works.
SERVICES_ENV = eval "$$($(PY) tests/services/mlflowserver.py env)"
RUNNER_PID := $(CACHE)/podrunner.pid
OPERATOR_PID := $(CACHE)/operator.pid

demo: install cluster-bin services-bin ## the whole loop on the local cluster, narrated as it happens
	@$(CLUSTER) up
	@$(PY) tests/services/mlflowserver.py up >/dev/null
	@$(KUBECTL) apply --server-side --force-conflicts -f crds/ >/dev/null
	@$(KUBECTL) wait --for condition=Established --timeout=60s -f crds/ >/dev/null
	@$(MAKE) --no-print-directory demo-runner demo-operator
	@echo "resetting namespace $(DEMO_NS) ..."
	@$(KUBECTL) delete namespace $(DEMO_NS) --ignore-not-found --timeout=120s >/dev/null
	@$(KUBECTL) create namespace $(DEMO_NS) >/dev/null
	@$(SERVICES_ENV) && $(KUBECTL) -n $(DEMO_NS) create secret generic flywheel-artifacts \
	  --from-literal=AWS_ACCESS_KEY_ID="$$AWS_ACCESS_KEY_ID" \
	  --from-literal=AWS_SECRET_ACCESS_KEY="$$AWS_SECRET_ACCESS_KEY" >/dev/null
	@$(PY) -c 'import sys; sys.path[:0] = ["tests/services", "tests/integration"]; \
	  from objectstore import ObjectStore; from sample_data import upload_sample_data; \
	  store = ObjectStore(); store.make_bucket("flywheel-artifacts"); upload_sample_data(store); \
	  s3 = store.client(); pages = s3.get_paginator("list_objects_v2").paginate( \
	    Bucket="flywheel-artifacts", Prefix="inference-logs/$(DEMO_NS)/"); \
	  [s3.delete_object(Bucket="flywheel-artifacts", Key=o["Key"]) for p in pages for o in p.get("Contents", [])]; \
	  print("uploaded the iris CSV scikit-learn ships to s3://flywheel-data/iris/iris.csv")'
	$(KUBECTL) -n $(DEMO_NS) apply -k manifests/demo/
	@$(SERVICES_ENV) && KUBECONFIG=$(KUBECONFIG_LOCAL) $(VENV)/bin/flywheel demo --namespace $(DEMO_NS) \
	  --operator-log $(CACHE)/operator.log --kubectl "$(KUBECTL)"

# The pod runner: node runner-0, whose pods run as local processes from .venv/bin
# (it routes the pod network 198.18.0.0/16 to lo, so it needs root).
demo-runner:
	@if [ -f $(RUNNER_PID) ]; then pid=$$(cat $(RUNNER_PID)); kill $$pid 2>/dev/null || true; \
	  for i in $$(seq 60); do kill -0 $$pid 2>/dev/null || break; sleep 0.5; done; rm -f $(RUNNER_PID); fi
	@$(KUBECTL) taint node kwok-node-0 kwok.x-k8s.io/node=fake:NoSchedule --overwrite >/dev/null
	@nohup $(PY) tests/cluster/podrunner.py --kubeconfig $(KUBECONFIG_LOCAL) \
	  --image-map flywheel=$(CURDIR)/$(VENV)/bin --work-dir $(CACHE)/podrunner \
	  > $(CACHE)/podrunner.log 2>&1 & echo $$! > $(RUNNER_PID)
	@for i in $$(seq 120); do \
	  taints=$$($(KUBECTL) get node runner-0 -o jsonpath='{.spec.taints[*].key}' 2>/dev/null) && \
	  ! grep -q node.kubernetes.io <<< "$$taints" && break; \
	  kill -0 $$(cat $(RUNNER_PID)) 2>/dev/null || { cat $(CACHE)/podrunner.log; exit 1; }; sleep 0.5; \
	done
	@echo "pod runner started (pid $$(cat $(RUNNER_PID)), log $(CACHE)/podrunner.log)"

# The operator with the services' endpoints, resyncing every 5 s for the demo.
demo-operator: operator-down
	@$(SERVICES_ENV); KUBECONFIG=$(KUBECONFIG_LOCAL) FLYWHEEL_IMAGE=flywheel:dev \
	  FLYWHEEL_S3_ENDPOINT="$$MLFLOW_S3_ENDPOINT_URL" FLYWHEEL_ARTIFACT_ROOT=s3://flywheel-artifacts \
	  FLYWHEEL_ARTIFACT_SECRET=flywheel-artifacts FLYWHEEL_RESYNC_SECONDS=5 \
	  nohup $(VENV)/bin/flywheel run --log-format plain \
	    --liveness http://127.0.0.1:18080/healthz --metrics-address 127.0.0.1 --metrics-port 19090 \
	    > $(CACHE)/operator.log 2>&1 & echo $$! > $(OPERATOR_PID)
	@for i in $$(seq 60); do sleep 1; \
	  kill -0 $$(cat $(OPERATOR_PID)) 2>/dev/null || { tail -20 $(CACHE)/operator.log; exit 1; }; \
	  curl -fs http://127.0.0.1:18080/healthz >/dev/null && break; done
	@echo "operator started (pid $$(cat $(OPERATOR_PID)), log $(CACHE)/operator.log)"

demo-down: ## stop the demo: operator, pod runner, services, control plane
	@$(MAKE) --no-print-directory operator-down
	@if [ -f $(RUNNER_PID) ]; then pid=$$(cat $(RUNNER_PID)); kill $$pid 2>/dev/null || true; \
	  for i in $$(seq 60); do kill -0 $$pid 2>/dev/null || break; sleep 0.5; done; rm -f $(RUNNER_PID); fi
	@$(MAKE) --no-print-directory services-down cluster-down

# --- A laptop with Docker and kind (not used by CI; this machine has no Docker) ---
IMAGE ?= flywheel:dev
KIND_CLUSTER ?= flywheel

image: ## build the one image of the operator and every workload (Docker)
	docker build -f operator/Dockerfile -t $(IMAGE) .

kind-up: ## create the kind cluster described by kind-config.yaml
	kind create cluster --config kind-config.yaml --name $(KIND_CLUSTER)

kind-load: image ## load the image into the kind cluster's nodes
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy: helm-bin ## install the CRDs and the chart into the current kube context, with $(IMAGE)
	$(BIN)/helm upgrade --install flywheel charts/flywheel -n flywheel-system --create-namespace \
	  --set image.repository=$(firstword $(subst :, ,$(IMAGE))) --set image.tag=$(lastword $(subst :, ,$(IMAGE))) \
	  --set image.pullPolicy=IfNotPresent $(HELM_ARGS)

# --------------------------------------------------- the loop on a real node
# A single-node Kubernetes built here (tests/node/node.py: containerd, kubelet,
# kube-proxy), the flywheel image made from a Debian rootfs without Docker or a
# registry, the chart, and the whole loop with every workload in a container.
# Needs root, cgroups and the Debian mirror (tests/node/can_run_e2e.sh).
.PHONY: image-rootfs e2e

image-rootfs: ## build the flywheel image from a Debian rootfs, as an OCI archive (root; cached)
	bash tests/node/build_image.sh

e2e: install cluster-bin services-bin helm-bin ## the loop on a real single-node cluster, timed; all down after
	FLYWHEEL_E2E=1 $(PY) -m pytest tests/node/test_e2e.py -v -s -p no:cacheprovider
