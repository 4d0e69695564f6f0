# Two commands for users: `make demo` and `make test`. Both (re)build .venv when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Without an NVIDIA GPU, pin torch to its CPU build; with one, pip picks the CUDA build pyproject allows.
CONSTRAINTS := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test bench bench-gpu install clean

$(BIN)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(CONSTRAINTS) -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/mtv demo --out runs/demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_world.py

# On every visible NVIDIA GPU (it launches torchrun itself); without CUDA it says so and exits 0.
bench-gpu: install
	$(BIN)/python benchmarks/bench_gpu.py

clean:
	rm -rf $(VENV) runs
