# Every entry point a user types. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local MNIST (the four original IDX files). Without it, Keras' download is tried.
MNIST_DIR ?= $(firstword $(wildcard ../shared/data/mnist) $(wildcard $(HOME)/.keras/datasets/mnist))
export MNIST_DIR

.PHONY: help setup test test-fast lint

help: ## List the targets.
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Create .venv and install every extra from the pinned constraints.

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,serve,client,dev]"
	@touch $@

test: setup ## Run the whole test suite (unit and end-to-end, about 10 minutes on 2 cores).
	$(BIN)/pytest

test-fast: setup ## Run only the fast unit tests.
	$(BIN)/pytest -m "not e2e and not slow"

lint: setup ## ruff on all Python code.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
