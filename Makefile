# Timonier: developer entry points.
#   make run     the whole platform on this machine (SQLite, filesystem broker): UI :3010, API :3030
#   make test    lint, then the test suite against a throwaway PostgreSQL 15 and Redis (ARGS="-k foo")
#   make bench   one table of ratios: ingest, segments, workflows, emails (bench/*.py; BENCH_ONLY=, QUICK=1)
#   make lint    ruff
#   make lock    regenerate requirements.txt and requirements-dev.txt from pyproject.toml (UPGRADE=1)
#   make clean   remove the virtualenv and var/

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Every package of the dependency tree pinned with its hashes: what `make run`, `make test` and the
# Dockerfile install (requirements-dev.txt adds the tests' tools to requirements.txt).
LOCK := requirements.txt
DEV_LOCK := requirements-dev.txt
NODE_STAMP := node_modules/.installed
ARGS ?=

.PHONY: help venv run test bench lint lock clean

help:
	@echo "make venv | run | test [ARGS='-k foo'] | bench | lint | lock [UPGRADE=1] | clean"

venv: $(STAMP)

# The locked packages (pip refuses any file whose hash is not in the lock), then Timonier itself
# without dependencies, built by the locked setuptools (build isolation would fetch an unpinned
# one). `pip check` fails if pyproject.toml asks for something the lock lacks: run `make lock`.
$(STAMP): pyproject.toml $(DEV_LOCK)
	@test -n "$(PYTHON)" || { echo "python3.11 (or python3) is required" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# uv resolves (installed into .venv for this only: installing Timonier never needs it), for every
# platform, keeping the pins already in the locks unless UPGRADE=1. setuptools is pyproject.toml's
# build backend ([build-system] requires), locked too. The runtime lock is constrained by the dev
# lock, so the two agree on every version.
UV_VERSION := 0.13.9
LOCK_FLAGS = --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock" \
	--quiet $(if $(UPGRADE),--upgrade)
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	echo "setuptools>=69" | $(BIN)/uv pip compile pyproject.toml - --extra dev $(LOCK_FLAGS) -o $(DEV_LOCK)
	echo "setuptools>=69" | $(BIN)/uv pip compile pyproject.toml - -c $(DEV_LOCK) $(LOCK_FLAGS) -o $(LOCK)

run: venv
	$(BIN)/python scripts/init_env.py
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput
	PATH="$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

# JavaScript that only the tests use (package.json): installed when there is a lock file.
ifneq ($(wildcard package-lock.json),)
test: $(NODE_STAMP)
endif

$(NODE_STAMP): package-lock.json package.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20) is required for the tests' JavaScript" >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

test: venv
	PATH="$(BIN):$$PATH" $(BIN)/python scripts/testenv.py $(ARGS)

# Every part writes its rows to bench/results/parts/<part>.json; report.py prints them as one table
# of ratios and writes bench/results/latest.json. BENCH_ONLY=<part> runs one part, QUICK=1 every row
# small (under 3 minutes in all). A part that fails is reported and the others still run; the bench
# fails only when a row could not be measured, never on a ratio.
BENCH_PARTS := ingest segments workflows emails
bench: venv
	@for part in $(or $(BENCH_ONLY),$(BENCH_PARTS)); do \
	  case " $(BENCH_PARTS) " in *" $$part "*) ;; \
	    *) echo "BENCH_ONLY must be among: $(BENCH_PARTS)" >&2; exit 2;; esac; \
	done
	PATH="$(BIN):$$PATH" QUICK="$(QUICK)" $(BIN)/python bench/run.py $(or $(BENCH_ONLY),$(BENCH_PARTS))

# The email designer's JavaScript (GrapesJS + grapesjs-mjml, pinned in package.json), copied with
# its licences into emails/static/emails/vendor/, and the workflow builder (workflows/frontend/*.jsx
# with React Flow, React and dagre) bundled by esbuild into workflows/static/workflows/ with the
# licences of what it contains; both committed: running Timonier needs no npm.
.PHONY: vendor
vendor: $(NODE_STAMP)
	$(PYTHON) scripts/vendor.py

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var
