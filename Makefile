# make demo: venv + install + database from real models + report.   make test: venv + install + ruff + tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Use the machine's local CPU torch wheel when it exists (an unpinned torch would pull a GPU build).
PIPFLAGS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: all venv demo test lint browser bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIPFLAGS) -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m filterdb.demo

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# Headless chromium for tests/test_browser.py: installed where missing and possible, else skipped.
browser:
	@command -v chromium >/dev/null || (command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	  </dev/null || echo "chromium unavailable: browser tests will be skipped")

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/analysis.py
	$(BIN)/python benchmarks/health.py

clean:
	rm -rf $(VENV) demo/*.filterdb demo/report.html
