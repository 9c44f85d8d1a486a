# flexsnn: two commands do all the set-up on a fresh machine.
#   make demo   creates .venv, installs flexsnn, runs the main job on the offline default
#   make test   creates .venv, installs flexsnn with test extras, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.flexsnn-installed
DEMO_ARGS ?=

.PHONY: venv demo demo-quick test test-fast hwtest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first: a bare `torch` requirement would pull several GB of CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,byom]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flexsnn demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(VENV)/bin/flexsnn demo --quick $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests hwtests

test-fast: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow" tests

hwtest: $(STAMP)
	$(PY) -m pytest -q hwtests --backend sim

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
