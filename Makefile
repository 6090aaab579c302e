# Two commands on a fresh machine: `make run` (proxy) and `make test` (whole suite).
UPSTREAM ?= https://api.anthropic.com
LISTEN ?= 127.0.0.1:8080
RULES ?= rules/default.yaml
PYTEST_ARGS ?=

.PHONY: venv run demo test lint bench
venv:
	@scripts/bootstrap.sh

run: venv
	.venv/bin/hydraguard run --upstream $(UPSTREAM) --listen $(LISTEN) --rules $(RULES)

demo: venv
	.venv/bin/hydraguard demo

test: venv
	@scripts/ensure-chromium.sh
	.venv/bin/ruff check addon tests bench geoip
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: venv
	.venv/bin/python bench/run.py
