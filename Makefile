# Model Foundry — the two commands of the README:
#   make forge   create .venv if missing, install the project, forge the default blueprint offline
#   make test    install the dev extras and the JavaScript runtime, lint, run every test
PYTHON ?= python3
VENV ?= .venv
BLUEPRINT ?= text_classification
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
NODE_DIR := runtimes/node

.PHONY: forge test install install-dev node lint bench proto clean-runs lab

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# onnxruntime-node's install script downloads binaries from the internet; the npm package
# already ships the CPU binaries, so skip install scripts.
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

node: $(NODE_DIR)/node_modules/.installed

forge: install
	$(VENV)/bin/foundry forge $(BLUEPRINT)

lint: install-dev
	$(VENV)/bin/ruff check .

# The suite checks the forged default models too (conformance in Python and JavaScript,
# differential fuzzing), so forge them first when they are missing.
test: install-dev node
	$(VENV)/bin/ruff check .
	test -f models/is_question_preprocessor.bin -a -f models/confirmation_preprocessor.bin \
		|| $(VENV)/bin/foundry forge $(BLUEPRINT)
	FOUNDRY_REQUIRE_FORGED=1 $(VENV)/bin/pytest
	cd $(NODE_DIR) && FOUNDRY_MODELS_DIR=$(CURDIR)/models node --test

lab: install
	$(VENV)/bin/foundry lab

# Regenerate the protobuf code from proto/ (the generated files are committed; a test checks
# they match the schema).
proto: install-dev
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. proto/foundry/v1/preprocessor.proto

bench: install-dev
	$(PY) bench/forge.py --blas-threads 1
	$(PY) bench/runtime.py
	$(PY) bench/refine.py
	$(PY) bench/baselines.py
	$(PY) bench/seeds.py
	$(PY) bench/generation.py

clean-runs:
	rm -rf runs/*/ && touch runs/.gitkeep
