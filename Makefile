# The two commands of the README: `make demo` runs the example, `make test` the suite.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make test`'s pytest-xdist workers: one per core this process may use, at most 4 (past that the
# longest test file bounds the wall time, and each worker is a JAX process of its own);
# `make test TEST_WORKERS=0` runs the suite in one process.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1))")

.PHONY: demo test check bench clean editors-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,all,compare]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/schedc check examples/spectral_line.sched
	$(BIN)/schedc show examples/spectral_line.sched
	$(BIN)/schedc run examples/spectral_line.sched --out out/spectral_line --force

test: $(STAMP)
	SCHEDC_REQUIRE_COMPARE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

check: $(STAMP)
	$(BIN)/schedc check examples/*.sched

bench: $(STAMP)
	$(BIN)/python bench/bench_check.py
	$(BIN)/python bench/bench_resolve.py
	$(BIN)/python bench/bench_run.py

# TextMate grammar, Python-injection and TypeScript checks of the VS Code extension (needs node/npm).
editors-test:
	cd editors/vscode && npm install --no-audit --no-fund && npm test

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
