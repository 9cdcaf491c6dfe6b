# Developer entry points. `make quickstart` runs celora's main job on a fresh machine; `make test` runs the suite.
#
# Everything is installed into the project's own virtualenv, .venv (made by uv when it is on PATH, else by
# `python3 -m venv`), never into the interpreter's site-packages: that works on PEP 668 systems (Debian and
# Ubuntu refuse `pip install` into their python3) and leaves the user's Python as it was. Installs run only
# when pyproject.toml is newer than a stamp in .venv, so a second `make quickstart` installs nothing.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
CELORA := $(VENV)/bin/celora
UV ?= $(shell command -v uv 2>/dev/null)

ifneq ($(UV),)
MAKE_VENV = $(UV) venv --quiet --python $(PYTHON) $(VENV)
VENV_INSTALL = $(UV) pip install --quiet --python $(VPY)
else
MAKE_VENV = $(PYTHON) -m venv $(VENV)
VENV_INSTALL = $(VPY) -m pip install --quiet --disable-pip-version-check
endif

.PHONY: install install-dev docs quickstart run test test-compat test-unit bench lint db-start db-stop db-url clean distclean pgbouncer pgbouncer-stop

install: $(VENV)/.installed          ## celora (console script .venv/bin/celora) in editable mode, with its embedded PostgreSQL

install-dev: $(VENV)/.installed-dev  ## celora plus the test and docs dependencies (the docs site's build is tested too)

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "celora needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version 2>&1). Run make PYTHON=python3.11 ..."; exit 1; }
	$(MAKE_VENV) || { rm -rf $(VENV); echo "Could not create $(VENV). On Debian/Ubuntu: apt-get install python3-venv (or install uv)."; exit 1; }
	@echo '*' > $(VENV)/.gitignore

$(VENV)/.installed: pyproject.toml | $(VPY)
	$(VENV_INSTALL) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VPY)
	$(VENV_INSTALL) -e '.[test,docs]'
	@touch $@ $(VENV)/.installed

quickstart: install ## install, start the local PostgreSQL (if no DATABASE_URL), apply migrations, seed the fixtures, check health
	$(CELORA) db migrate-deploy
	$(CELORA) db seed
	$(CELORA) db health

run: quickstart

# The suite runs in TEST_WORKERS processes (pytest-xdist), each with its own throwaway cluster and PgBouncer: most
# of a test's time is a CLI child's start-up or a wait on PostgreSQL, so two workers use two cores where one left
# one idle (15.6 min at load 5-9 with 8 other jobs running, against 14 min alone on a quiet machine before).
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: install-dev   ## the whole suite against a throwaway PostgreSQL + PgBouncer it starts itself
	$(VPY) -m pytest -n $(TEST_WORKERS)

# The compatibility subset (tests marked `compat`, chosen in tests/compat.py) against other server binaries:
# CELORA_TEST_PG_BIN=DIR, or PG=MAJOR (14-18), which .ci/pg-bin installs under .ci-cache/ and resolves.
test-compat: install-dev ## the compatibility subset on one PostgreSQL: make test-compat PG=15 (or CELORA_TEST_PG_BIN=DIR)
	@bin="$(CELORA_TEST_PG_BIN)"; \
	if [ -n "$(PG)" ]; then bin=$$(PYTHON=$(VPY) .ci/pg-bin $(PG)) || exit 1; fi; \
	if [ -z "$$bin" ]; then echo "Say which PostgreSQL: make test-compat PG=15 (14-18), or CELORA_TEST_PG_BIN=/usr/lib/postgresql/15/bin"; exit 2; fi; \
	echo "== compatibility subset on $$bin"; \
	CELORA_TEST_PG_BIN="$$bin" $(VPY) -m pytest -n $(TEST_WORKERS) -m compat

# `db` marks a test that needs PostgreSQL: tests/conftest.py sets it from the database fixtures a test uses, and
# modules that start a server of their own carry it themselves.
test-unit: install-dev ## only the tests that need no database
	$(VPY) -m pytest -m "not db"

bench: install-dev  ## performance scripts; each prints ratios against a baseline measured in the same run
	@set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(VPY) $$script; done

lint: install-dev   ## ruff, mypy and the import layers (lint-imports, [tool.importlinter] in pyproject.toml)
	@for tool in ruff mypy lint-imports; do [ -x $(VENV)/bin/$$tool ] || { echo "$$tool is not installed in $(VENV) (it comes with the test extra: make install-dev)"; exit 1; }; done
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy celora_cli
	$(VENV)/bin/lint-imports

docs: install-dev   ## the documentation site into build/site/ (strict: a broken link or a warning fails); the command reference is generated from the CLI
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet -f docs/mkdocs.yml

db-start: install   ## start the celora-managed local PostgreSQL (.celora/)
	$(CELORA) local start

db-stop: install
	$(CELORA) local stop

db-url: install
	@$(CELORA) local url

pgbouncer: install  ## PgBouncer from pgbouncer.ini in front of the local PostgreSQL; prints DATABASE_URL / DIRECT_DATABASE_URL
	$(CELORA) local pgbouncer start

pgbouncer-stop: install
	$(CELORA) local pgbouncer stop

clean:              ## stop the local PostgreSQL and delete its data wherever it lives (asks nothing: it is the dev database)
	-@if [ -x $(CELORA) ]; then $(CELORA) local pgbouncer stop >/dev/null 2>&1; fi
	-@if [ -x $(CELORA) ]; then $(CELORA) local destroy --yes 2>/dev/null || $(CELORA) local stop; fi
	rm -rf .celora .pytest_cache .import_linter_cache .grimp_cache build dist *.egg-info

distclean: clean    ## clean, and delete the virtualenv (and .ci-cache, the PostgreSQL builds of make test-compat) too
	rm -rf $(VENV) .ci-cache
