# Developer entry points. Everything runs from the project virtualenv in .venv.
#   make run    migrate, sync roles and reference data, seed demo data, start web + worker + scheduler
#               (+ embedded Redis)
#   make test   ruff, then pytest on 2 processes (TEST_DATABASE_URL is passed through from the environment)
#   make fuzz   schemathesis against the running app on a fresh PostgreSQL database (needs TEST_DATABASE_URL)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLASK := $(BIN)/flask --app app:create_app

.DEFAULT_GOAL := help
.PHONY: help venv run test lint bench babel clean fuzz

help:
	@echo "make venv | run | test | lint | fuzz | bench | babel | clean"

venv: $(STAMP)

# Re-install only when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

run: venv
	$(FLASK) db upgrade
	$(FLASK) crm sync-roles
	$(FLASK) crm sync-reference
	$(FLASK) crm seed-demo
	$(BIN)/python run.py all

# TEST_DATABASE_URL reaches pytest through the environment (unset: the suite's own default).
test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

# Migrates, seeds and serves the app on a free loopback port, fuzzes it as a salesperson and as the
# administrator (all checks, fixed seed, bounded examples), stops everything and drops its database.
# Reports in instance/fuzz/. FUZZ_SEED, FUZZ_MAX_EXAMPLES, FUZZ_PHASES, FUZZ_USERS tune it.
fuzz: venv
	$(BIN)/python tests/fuzz/run_fuzz.py

lint: venv
	$(BIN)/ruff check .

bench: venv
	@set -e; found=; \
	for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		case "$$script" in bench/__init__.py|bench/common.py) continue;; esac; \
		found=1; echo "== $$script"; $(BIN)/python "$$script"; \
	done; \
	[ -n "$$found" ] || echo "no bench/*.py scripts"

babel: venv
	@if find app/translations -name '*.po' 2>/dev/null | grep -q .; then \
		$(BIN)/pybabel compile -d app/translations; \
	else \
		echo "no catalogs in app/translations: nothing to compile"; \
	fi

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name '*.pyc' -type f -exec rm -f {} +
	rm -rf .pytest_cache .ruff_cache
