# Set-up and checks. `make demo` runs the main job; `make test` runs the test suite (both install first).
# TORCH pins the CPU wheel this project's machines carry; elsewhere run e.g. `make test TORCH=torch`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
EXTRAS ?= test,app,bench

.PHONY: install browser demo test test-fast install-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(VENV)/bin/fastdit compare --prompt "a red ball bouncing in a white room" --methods radial grat --out out/compare

# The web demo's browser test drives Debian's chromium; install it where we may (root + apt), else it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed: the browser test will be skipped"

test: install browser
	$(PY) -m pytest -q -rs

test-fast: install
	$(PY) -m pytest -q -rs -m "not slow"

# What a user of the library gets: a non-editable install in a fresh virtual environment, run from another
# folder, finds the bundled sample and writes a video (.ci/run runs it after the tests).
CHECK_VENV ?= out/install-check
install-check:
	rm -rf $(CHECK_VENV) && python3 -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(CHECK_VENV)/bin/python -m pip install -q .
	cd "$$(mktemp -d)" && $(abspath $(CHECK_VENV))/bin/fastdit generate --prompt "a red ball bouncing in a white room" \
	  --steps 2 --out ball.mp4 && test -s ball.mp4 && echo "install-check: the installed fastdit wrote $$PWD/ball.mp4"

clean:
	rm -rf $(VENV) out test-artifacts build
