# Model Foundry — the two commands of the README:
#   make forge   create .venv if missing, install the project, forge the default blueprint offline
#   make test    install the dev extras, the JavaScript and Rust runtimes, lint, run every test
#   make rust    build the Rust runtime (runtimes/rust: library + foundry-rt CLI), offline
#   make native  build the optional native fast path of the Python runtime (foundry/_native*.so)
#   make c       build the C ABI of the Rust runtime (libfoundry.so/.a, runtimes/rust/c/include)
PYTHON ?= python3
VENV ?= .venv
BLUEPRINT ?= text_classification
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
NODE_DIR := runtimes/node
RUST_DIR := runtimes/rust
# rustup's cargo when it is not on PATH; the crates come from Debian (see .ci/run), offline.
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

.PHONY: forge test install install-dev node rust native c forged-default lint bench proto clean-runs lab

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

# The Rust runtime builds offline against Debian's packaged crates (runtimes/rust/.cargo/config.toml;
# apt-get install librust-…-dev protobuf-compiler, as .ci/run does). cargo rebuilds only what changed.
rust:
	cd $(RUST_DIR) && $(CARGO) build --release --offline --bins

# The C ABI: runtimes/rust/c/include/foundry.h, libfoundry.{so,a} in runtimes/rust/target/release.
c:
	cd $(RUST_DIR) && $(CARGO) build --release --offline -p foundry-c

# The optional native fast path of the Python runtime: the same crate as the extension module
# foundry._native (PyO3 from Debian's packages), moved into place atomically.
NATIVE_SO = foundry/_native$(shell $(PY) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))" 2>/dev/null)
native: install
	cd $(RUST_DIR) && PYO3_PYTHON=$(abspath $(PY)) $(CARGO) build --release --offline -p foundry-native
	cp $(RUST_DIR)/target/release/lib_native.so $(NATIVE_SO).tmp && mv $(NATIVE_SO).tmp $(NATIVE_SO)

forge: install
	$(VENV)/bin/foundry forge $(BLUEPRINT)

lint: install-dev
	$(VENV)/bin/ruff check .

# The suite checks the forged default models too (conformance in Python, JavaScript and Rust,
# differential fuzzing), so forge them first when they are missing. It runs the pure-Python
# runtime (FOUNDRY_RUNTIME=python); tests/test_native.py holds the native path to it.
# pytest runs on TEST_WORKERS processes (pytest-xdist), a test file per worker at a time, the slow
# files first (tests/conftest.py orders them; xdist would otherwise sort files by test count): most
# of the time goes to single-threaded forges, so two workers use both cores of a small machine.
# The forge (one core) runs beside the JavaScript install and the Rust builds.
TEST_WORKERS ?= 2
test: install-dev
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory -j2 forged-default node rust native c
	cd $(RUST_DIR) && FOUNDRY_MODELS_DIR=$(CURDIR)/models $(CARGO) test --release --offline
	FOUNDRY_REQUIRE_FORGED=1 FOUNDRY_RUNTIME=python $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
	cd $(NODE_DIR) && FOUNDRY_MODELS_DIR=$(CURDIR)/models node --test

# The default models the suite checks, forged when they are missing.
forged-default: install
	test -f models/is_question_preprocessor.bin -a -f models/confirmation_preprocessor.bin \
		|| $(VENV)/bin/foundry forge $(BLUEPRINT)

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

# Deletes the run folders, never raw generated data: that lives in data/raw/ (and a store still
# in its old place, runs/<blueprint>/raw/, stays until the next forge moves it to data/raw/).
clean-runs:
	find runs -mindepth 2 -maxdepth 2 ! -name raw -exec rm -rf {} + && touch runs/.gitkeep
