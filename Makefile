# Tasks of the citystream repository. `make help` lists them.
PYTHON ?= python

.PHONY: help install lint typecheck test-unit test bench format

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-10s %s\n", $$1, $$2}'

install:  ## install the package with its development tools, the local stack's servers and the AsyncAPI parser
	$(PYTHON) -m pip install -e '.[dev]'
	citystream local install --victoria-metrics --deploy-tools --kcat --mqtt --kafka
	npm ci --ignore-scripts --no-audit --no-fund --prefix tests/asyncapi

lint:  ## ruff: style, imports, and the layers' banned imports
	ruff check .
	ruff format --check .

format:  ## ruff: format and fix what can be fixed
	ruff format .
	ruff check --fix .

typecheck:  ## mypy on streams/ and schemas/
	mypy

test-unit:  ## the unit tests: pure logic, no server (about 30 s)
	$(PYTHON) -m pytest tests/unit

test:  ## the whole suite: unit tests and integration tests with real servers started by the fixtures
	$(PYTHON) -m pytest

bench:  ## citystream bench with its defaults: figures against a baseline, on the embedded local stack
	citystream bench
