# Two commands: `make lab` (set up + open the course) and `make test` (set up + run every test and notebook).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb)) $(sort $(wildcard notebooks/solutions/*.ipynb))

# Jupyter, IPython, matplotlib and Hugging Face write inside the repo's ignored .cache/, never in $HOME.
CACHE := $(CURDIR)/.cache
export JUPYTER_CONFIG_DIR  := $(CACHE)/jupyter/config
export JUPYTER_DATA_DIR    := $(CACHE)/jupyter/data
export JUPYTER_RUNTIME_DIR := $(CACHE)/jupyter/runtime
export JUPYTER_PLATFORM_DIRS := 1
export IPYTHONDIR          := $(CACHE)/ipython
export MPLCONFIGDIR        := $(CACHE)/matplotlib
export HF_HOME             := $(CACHE)/huggingface
export XDG_CACHE_HOME      := $(CACHE)/xdg
export PYTHONDONTWRITEBYTECODE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
CI_ENV := COURSE_PROFILE=ci HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: setup lab test unit nbval execute verify doctor clean

setup: $(STAMP)

# Re-installs whenever pyproject.toml or constraints.txt change; torch stays pinned in every pip call.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt "torch==2.13.0" -e ".[dev]"
	mkdir -p $(CACHE)
	touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --notebook-dir=notebooks $(ALLOW_ROOT)

# Unit/parity tests, then every notebook in the ci profile (nbval lax mode): every cell must run; the cells tagged
# nbval-check-output (outputs that do not depend on the profile) must equal the stored cpu-profile output.
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=900 --nbval-sanitize-with tests/sanitize.cfg
# The browser test runs last and alone: it times each widget update, as on a student's 2 cores with nothing else running.
test: setup
	$(CI_ENV) $(BIN)/python -m pytest -n 2 --dist loadfile -p no:cacheprovider $(NBVAL) --ignore=tests/test_browser.py \
		tests $(NOTEBOOKS)
	$(CI_ENV) $(BIN)/python -m pytest -p no:cacheprovider tests/test_browser.py

unit: setup
	$(CI_ENV) $(BIN)/python -m pytest -n 2 --dist loadfile -p no:cacheprovider tests

# Only the notebooks (pick some with NOTEBOOKS=...), as make test runs them.
nbval: setup
	$(CI_ENV) $(BIN)/python -m pytest -n 2 --dist loadfile -p no:cacheprovider $(NBVAL) $(NOTEBOOKS)

# Re-run notebooks top to bottom in the cpu profile (what a student's laptop runs) and store their outputs and key
# numbers (notebooks/book/); tag the cells whose output is the same in the ci profile. E.g. NOTEBOOKS=notebooks/05_decoding.ipynb
execute: setup
	$(OFFLINE) $(BIN)/python tests/notebook_outputs.py execute $(NOTEBOOKS)

# Re-run notebooks in the cpu profile and compare every output with the stored one (timings sanitized).
verify: setup
	COURSE_PROFILE=cpu $(OFFLINE) $(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-current-env \
		--nbval-cell-timeout=1800 --nbval-sanitize-with tests/sanitize.cfg $(NOTEBOOKS)

doctor: setup
	$(BIN)/python -c "import sys, course_utils as cu; sys.exit(0 if cu.doctor() else 1)"

clean:
	rm -rf $(VENV) $(CACHE)
