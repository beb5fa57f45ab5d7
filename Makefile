# `make demo` and `make test` work from a fresh clone: both build .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test notebook notebook-outputs figures speed bench clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) train.py

test: $(VENV)/.installed
	$(PY) -m pytest

notebook: $(VENV)/.installed
	$(PY) -m pip install -q jupyterlab==4.2.5
	$(VENV)/bin/jupyter lab notebooks/srcnn_walkthrough.ipynb

# The notebook executed in place with nbclient: outputs stored (tests/test_notebook.py checks them).
notebook-outputs: $(VENV)/.installed
	$(PY) scripts/notebook_outputs.py

# Every figure in docs/images/ and the speed tables (README, docs/speed.md), from the numbers stored
# in benchmarks/results/, the shipped models and ../shared/data; the same bytes every time.
figures: $(VENV)/.installed
	$(PY) scripts/figures.py
	$(PY) scripts/update_readme.py --speed

# Speed timings (`make bench`, the old name, does the same).
speed bench: $(VENV)/.installed
	$(PY) -m srcnn_theano speed --json

clean-venv:
	rm -rf $(VENV)
