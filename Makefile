# Custos: `make run` brings the whole stack up and runs a demo; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MANAGE := $(PY) manage.py

.PHONY: run test bench bootstrap services services-down migrate lint stop clean

bootstrap: $(VENV)/.installed devchain/node_modules/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	@echo "[bootstrap] python virtual environment in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@$(PIP) install --quiet -r requirements.txt -c constraints.txt
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

run: bootstrap services migrate
	@$(PY) scripts/run.py

stop:
	-@$(MANAGE) devchain down
	@$(PY) scripts/services.py down

lint: bootstrap
	@$(VENV)/bin/ruff check .

test: bootstrap services
	@$(PY) scripts/services.py browser
	@echo "[test] ruff check"
	@$(VENV)/bin/ruff check .
	@echo "[test] pytest"
	@$(VENV)/bin/pytest

# Every benchmark in bench/ (each against a baseline measured in the same run), then
# bench/report.md and bench/charts/*.png. BENCH_ARGS="--only signing,pipeline" or "--quick".
bench: bootstrap services
	@$(PY) bench/run_all.py $(BENCH_ARGS)

clean: services-down
	rm -rf var $(VENV) devchain/node_modules devchain/build
