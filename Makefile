# The course in two commands:  make demo  (run the whole tutorial headless)  and  make test.
# Every target sets itself up on a fresh machine: it creates .venv and installs into it when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick
export PRUNING_PROFILE := $(PROFILE)

.PHONY: demo test test-lib test-notebooks lab bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pruning course)" >/dev/null
	touch $(STAMP)

## Run every notebook in order, headless, in the quick profile; results in build/ and reports/.
demo: $(STAMP)
	$(PY) -m pruning_lib.demo

## pytest on tests/ and nbval on notebooks/.
test: test-lib test-notebooks

test-lib: $(STAMP)
	$(PY) -m pytest tests -q

test-notebooks: $(STAMP)
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  $(PY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks -q -p no:cacheprovider; \
	else echo "no notebooks yet"; fi

## JupyterLab on the notebooks.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

## Benchmarks (scripts, not tests): surgery + Taylor cost.
bench: $(STAMP)
	$(PY) benchmarks/bench_surgery.py
	$(PY) benchmarks/bench_speed.py

clean:
	rm -rf build .pytest_cache
