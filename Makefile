# Custos: `make run` brings the whole stack up and runs a demo; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MANAGE := $(PY) manage.py

# ML_ENABLED=0 (or false/no/off; the t3.micro profile): no PyTorch install (requirements-ml.txt) and no
# ml worker. Taken from the command line or the environment, else from .env; on by default.
ML_ENABLED ?= $(shell sed -n 's/^ML_ENABLED=//p' .env 2>/dev/null | tail -n 1)
ML_OFF := $(filter 0 false no off n,$(shell echo '$(strip $(ML_ENABLED))' | tr A-Z a-z))
ML_STAMP := $(if $(ML_OFF),,$(VENV)/.installed-ml)
# Set to https://download.pytorch.org/whl/cpu for PyTorch's CPU-only wheel (a plain install on Linux
# pulls several GB of CUDA libraries); empty: pip's configured indexes.
TORCH_INDEX_URL ?=

.PHONY: run test bench bootstrap services services-down migrate lint logs stop clean

bootstrap: $(VENV)/.installed $(ML_STAMP) devchain/node_modules/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	@echo "[bootstrap] python virtual environment in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@$(PIP) install --quiet -r requirements.txt -c constraints.txt
	@touch $@

# The ml worker's dependencies (PyTorch) have their own stamp: ML_ENABLED=0 skips them, and a change
# to requirements-ml.txt reinstalls only them.
$(VENV)/.installed-ml: requirements-ml.txt constraints.txt | $(VENV)/.installed
	@echo "[bootstrap] ML dependencies (PyTorch) from requirements-ml.txt"
	$(if $(TORCH_INDEX_URL),@$(PIP) install --quiet --no-deps "$$(grep '^torch==' requirements-ml.txt)" --index-url $(TORCH_INDEX_URL))
	@$(PIP) install --quiet -r requirements-ml.txt -c constraints.txt
	@touch $@

devchain/node_modules/.installed: devchain/package.json devchain/package-lock.json
	@echo "[bootstrap] npm ci in devchain/"
	@cd devchain && npm ci --no-audit --no-fund --loglevel=error
	@cd devchain && node scripts/compile.js
	@touch $@

services: $(VENV)/.installed
	@$(PY) scripts/services.py up

services-down: $(VENV)/.installed
	@$(PY) scripts/services.py down

migrate: bootstrap services
	@$(MANAGE) migrate --noinput

# The console shows the stack coming up, health and the demo trade; each process logs to
# var/log/<process>.log (`make logs` follows them all).
run: bootstrap services migrate
	@ML_ENABLED=$(if $(ML_OFF),0,1) $(PY) scripts/run.py

logs:
	@mkdir -p var/log
	tail -F var/log/*.log

stop:
	-@$(MANAGE) devchain down
	@$(PY) scripts/services.py down

lint: bootstrap
	@$(VENV)/bin/ruff check .

# Also installs Debian's chromium + chromium-driver (the admin browser test) and docker-compose
# (tests/test_compose.py validates docker-compose.yml with it).
test: bootstrap services
	@$(PY) scripts/services.py browser compose
	@echo "[test] ruff check"
	@$(VENV)/bin/ruff check .
	@echo "[test] pytest"
	@ML_ENABLED=$(if $(ML_OFF),0,1) $(VENV)/bin/pytest

# Every benchmark in bench/ (each against a baseline measured in the same run), then
# bench/report.md and bench/charts/*.png. BENCH_ARGS="--only signing,pipeline" or "--quick".
# bench/ml.py and the charts need the ML dependencies, whatever ML_ENABLED says.
bench: bootstrap $(VENV)/.installed-ml services
	@$(PY) bench/run_all.py $(BENCH_ARGS)

clean: services-down
	rm -rf var $(VENV) devchain/node_modules devchain/build
