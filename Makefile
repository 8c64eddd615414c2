# The two commands of the README: `make demo` runs the example, `make test` the suite.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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
	SCHEDC_REQUIRE_COMPARE=1 $(BIN)/python -m pytest -q

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
