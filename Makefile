# Developer entry points. Everything runs from the project virtualenv in .venv.
#   make run    migrate, sync roles and reference data, seed demo data, start web + worker + scheduler
#               (+ embedded Redis)
#   make test   ruff, then pytest on 2 processes (TEST_DATABASE_URL is passed through from the environment),
#               the end-to-end browser tests included (make browser installs Debian's chromium for them)
#   make fuzz   schemathesis against the running app on a fresh PostgreSQL database (needs TEST_DATABASE_URL)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLASK := $(BIN)/flask --app app:create_app
# The demo `make run` loads: large = the demo company plus 90 days of history (about half a minute once);
# `make run DEMO_SIZE=small` for the company and its waiting leads only.
DEMO_SIZE ?= large

.DEFAULT_GOAL := help
.PHONY: help venv browser run test lint bench babel clean fuzz

help:
	@echo "make venv | run | test | browser | lint | fuzz | bench | babel | clean"

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
	$(FLASK) crm seed-demo --size $(DEMO_SIZE)
	$(BIN)/python run.py all

# Debian's chromium and a Chinese font for tests/e2e (apt-get, sudo when not root); without a chromium
# those tests are skipped, each with the reason.
browser:
	@bash tests/e2e/ensure_browser.sh

# TEST_DATABASE_URL reaches pytest through the environment (unset: the suite's own default).
test: venv browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

# Migrates, seeds and serves the app on a free loopback port, fuzzes it as a salesperson and as the
# administrator (all checks, fixed seed, bounded examples), stops everything and drops its database.
# Reports in instance/fuzz/. FUZZ_SEED, FUZZ_MAX_EXAMPLES, FUZZ_PHASES, FUZZ_USERS tune it.
fuzz: venv
	$(BIN)/python tests/fuzz/run_fuzz.py

lint: venv
	$(BIN)/ruff check .

# The scale benchmarks, each printing its figures. bench/lists.py and bench/workbench_once.py time pages of
# an already filled database (they take its URL); bench/bigdata.py fills one.
BENCHES := org_tree dispatch circulation sms calls exports dashboard_sql pages scoring
bench: venv
	@set -e; for name in $(BENCHES); do echo "== bench/$$name.py"; $(BIN)/python bench/$$name.py; done

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
