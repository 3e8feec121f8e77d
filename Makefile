# supportbot — set-up, checks and benchmarks. `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

.PHONY: install demo run test pytest unit lint format bench clean locales

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create the virtualenv and install supportbot with its test tools

demo: install  ## the real service on SQLite against the built-in local Telegram server
	$(VENV)/bin/supportbot demo

run: install  ## run the service with the settings in .env / the environment
	$(VENV)/bin/supportbot run

test: lint pytest  ## everything CI checks: ruff, mypy, import-linter, and the whole suite on SQLite and PostgreSQL

pytest: install
	$(PY) -m pytest

unit: install  ## only tests/unit: pure code, no I/O, seconds
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

locales: install  ## after editing templates/: extract the texts to translate and update every catalog
	$(VENV)/bin/pybabel extract -F templates/locales/babel.cfg --no-location --omit-header \
		-o templates/locales/messages.pot templates
	$(VENV)/bin/pybabel update -D messages -i templates/locales/messages.pot -d templates/locales \
		--width 100 --ignore-obsolete

bench: install  ## the benchmarks of docs/benchmarks.md, on SQLite and PostgreSQL
	$(PY) bench/sla.py
	$(PY) bench/queue.py
	$(PY) bench/intake.py
	$(PY) bench/telegram.py
	$(PY) bench/flood.py
	$(PY) bench/mail.py
	$(PY) bench/accounts.py
	$(PY) bench/refunds.py
	$(PY) bench/report.py
	$(PY) bench/billing.py
	$(PY) bench/duplicates.py
	$(PY) bench/retention.py
	$(PY) bench/replicas.py
	$(PY) bench/search.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
