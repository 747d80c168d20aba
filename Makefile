# make demo: venv + install + database from real models + report.   make test: venv + install + tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Use the machine's local CPU torch wheel when it exists (an unpinned torch would pull a GPU build).
PIPFLAGS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: all venv demo test bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIPFLAGS) -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m filterdb.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/analysis.py
	$(BIN)/python benchmarks/health.py

clean:
	rm -rf $(VENV) demo/*.filterdb demo/report.html
