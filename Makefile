# The two entry points: `make demo` (the main job) and `make test`. Each sets up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev,postgres]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/tnas demo --space primer --steps 150 --seed 0

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check tnas tests bench

test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --durations=10

bench: $(VENV)/.installed
	$(PY) bench/builder.py
	$(PY) bench/workers.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
