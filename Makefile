# Every target installs what it needs first, so each works on a fresh checkout.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml .ci/apt-packages 2>/dev/null | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install proto run up test test-unit test-integration test-e2e bench clean

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@# Debian packages the tests use (.ci/apt-packages: promtool from `prometheus`)
	@missing=$$(for p in $$(cat .ci/apt-packages 2>/dev/null); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	@echo "installing llmops and its dependencies (the first install compiles llama.cpp: ~7 min)"
	$(PY) -m pip install -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

proto: install
	$(PY) -m llmops.protogen

# The main job: the platform up on embedded defaults, a demo corpus ingested, RAG questions
# answered in a table; it keeps running until Ctrl-C.
run: install
	$(VENV)/bin/llmops demo

up: install
	$(VENV)/bin/llmops up

test: install
	$(PY) -m pytest -p no:cacheprovider -ra tests

test-unit: install
	$(PY) -m pytest -p no:cacheprovider -ra tests/unit

test-integration: install
	$(PY) -m pytest -p no:cacheprovider -ra tests/integration

test-e2e: install
	$(PY) -m pytest -p no:cacheprovider -ra tests/e2e

bench: install
	$(PY) -m bench

clean:
	rm -rf .llmops bench/results
