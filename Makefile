# Every target installs what it needs first, so each works on a fresh checkout.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
# llama.cpp is compiled for a portable x86-64 baseline (AVX2/FMA/F16C), not for the build host:
# a native build uses every instruction the CPU lists, and on hosts that list AMX without granting
# it (seen on these VMs) the first matrix multiply dies with SIGILL. The wheel is kept in a
# wheelhouse keyed by these flags, so later installs (and fresh checkouts) reuse it.
LLAMA_CPP_VERSION := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | cut -d= -f3)
LLAMA_CMAKE_ARGS  := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
WHEELHOUSE ?= $(HOME)/.cache/llmops/wheels/$(shell echo '$(LLAMA_CPP_VERSION) $(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-10)
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml .ci/apt-packages 2>/dev/null; echo '$(LLAMA_CMAKE_ARGS)') | sha1sum | cut -c1-12)

.PHONY: install peers proto run up test test-unit test-integration test-e2e bench clean

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
	@ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "compiling llama.cpp $(LLAMA_CPP_VERSION) for a portable AVX2 baseline (~10 min on 2 cores, once)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel -q --no-cache-dir --no-deps \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELHOUSE); }
	$(PY) -m pip install -q --no-deps --force-reinstall $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	@echo "installing llmops and its dependencies"
	$(PY) -m pip install -e '.[dev]' --find-links $(WHEELHOUSE)
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

# Peers: official clients and SDKs in virtual environments of their own, never imported by llmops;
# the tests run them as subprocesses. otel: the `openai` SDK, the OpenTelemetry SDK, OTLP exporters
# and the openai instrumentations (OTel GenAI and OpenInference).
.peers/otel/.ok: tests/peers/otel.txt
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@[ -x .peers/otel/bin/python ] || python3 -m venv .peers/otel
	.peers/otel/bin/python -m pip install -q -r tests/peers/otel.txt
	@touch $@

# phoenix: a real Arize Phoenix server (OTLP export tests, the OTLP-ingest benchmark's peer)
.peers/phoenix/.ok: tests/peers/phoenix.txt
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@[ -x .peers/phoenix/bin/python ] || python3 -m venv .peers/phoenix
	.peers/phoenix/bin/python -m pip install -q -r tests/peers/phoenix.txt
	@touch $@

# litellm: LiteLLM's proxy (the routing benchmark's peer: overhead and failover beside the inference gateway)
.peers/litellm/.ok: tests/peers/litellm.txt
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@[ -x .peers/litellm/bin/python ] || python3 -m venv .peers/litellm
	.peers/litellm/bin/python -m pip install -q -r tests/peers/litellm.txt
	@touch $@

peers: .peers/otel/.ok .peers/phoenix/.ok .peers/litellm/.ok

proto: install
	$(PY) -m llmops.protogen

# The main job: the platform up on embedded defaults, a demo corpus ingested, RAG questions
# answered in a table; it keeps running until Ctrl-C.
run: install
	$(VENV)/bin/llmops demo

up: install
	$(VENV)/bin/llmops up

test: install peers
	$(PY) -m pytest -p no:cacheprovider -ra tests

test-unit: install
	$(PY) -m pytest -p no:cacheprovider -ra tests/unit

test-integration: install peers
	$(PY) -m pytest -p no:cacheprovider -ra tests/integration

test-e2e: install
	$(PY) -m pytest -p no:cacheprovider -ra tests/e2e

bench: install peers
	$(PY) -m bench

clean:
	rm -rf .llmops bench/results
