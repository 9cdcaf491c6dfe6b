# Developer entry points. `make quickstart` runs celora's main job on a fresh machine; `make test` runs the suite.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev quickstart run test test-unit bench db-start db-stop db-url clean

install:            ## install celora (console script `celora`) in editable mode
	$(PIP) install -e .

install-dev:        ## install celora with the test dependencies and the embedded PostgreSQL build
	$(PIP) install -e '.[test,embedded]'

quickstart: install ## install, start the local PostgreSQL (if no DATABASE_URL), apply migrations, check health
	celora db migrate-deploy
	celora db health

run: quickstart

test:               ## the whole suite against a throwaway PostgreSQL + PgBouncer it starts itself
	$(PYTHON) -m pytest

test-unit:          ## only the tests that need no database
	$(PYTHON) -m pytest tests/unit

bench:              ## performance scripts; each prints ratios against a baseline measured in the same run
	$(PYTHON) benchmarks/bench_startup.py
	$(PYTHON) benchmarks/bench_health.py

db-start:           ## start the celora-managed local PostgreSQL (.celora/)
	celora local start

db-stop:
	celora local stop

db-url:
	@celora local url

clean:              ## stop the local PostgreSQL and delete its data (asks no question: this is the dev database)
	-celora local stop
	rm -rf .celora .pytest_cache build dist *.egg-info
