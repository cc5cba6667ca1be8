# salt-unet: `make run` runs the series, `make test` runs the tests.
# Both create .venv from requirements.txt the first time (and again only when it changes).
# make test-colab and make test-backends build venvs of their own (.venv-colab, .venv-backends).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := 01_explore_data.ipynb 02_build_unet.ipynb 03_train.ipynb 04_evaluate.ipynb

# make run settings: SALT_SETTING=quick|class|full, SALT_RUN_DIR, SALT_DATA_DIR (see README)
SALT_SETTING ?= quick
SALT_RUN_DIR ?= runs/$(SALT_SETTING)
export SALT_SETTING SALT_RUN_DIR
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: run test test-fast test-colab test-backends lab notebooks clean-venv

$(STAMP): requirements.txt
	$(call venv,$(VENV),requirements.txt)

## run: execute the four notebooks in order into $(SALT_RUN_DIR)/
run: $(STAMP)
	@mkdir -p "$(SALT_RUN_DIR)"
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb -> $(SALT_RUN_DIR)/$$nb"; \
	  $(BIN)/papermill --log-output --no-progress-bar --kernel python3 "$$nb" "$(SALT_RUN_DIR)/$$nb" || exit 1; \
	done
	@echo "Done: executed notebooks, model, history and metrics.json are in $(SALT_RUN_DIR)/"

NBVAL = -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
  --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $(NOTEBOOKS)
QUICK_SYNTHETIC = SALT_DATA_DIR=synthetic SALT_SETTING=quick SALT_RUN_DIR=$$(mktemp -d)/run

## test: unit tests (slow ones too), then nbval over the four notebooks (synthetic data, quick setting)
## into a fresh run folder, then the tests marked after_notebooks on what that run left there
test: $(STAMP)
	$(BIN)/python -m pytest tests -m "not after_notebooks"
	RUN=$$(mktemp -d); \
	  SALT_DATA_DIR=synthetic SALT_SETTING=quick SALT_RUN_DIR=$$RUN/run $(BIN)/python $(NBVAL) \
	  && SALT_SERIES_RUN_DIR=$$RUN/run $(BIN)/python -m pytest tests/test_series.py -m after_notebooks \
	  && rm -rf "$$RUN" || { echo "The notebooks' run folder is kept for a look: $$RUN/run"; exit 1; }

## test-fast: the unit tests not marked slow (no training beyond a moment, no notebooks, no benchmark)
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

# A venv from a requirements file: $(call venv,FOLDER,FILES)
define venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet $(foreach f,$(2),-r $(f))
	$(1)/bin/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(1)/.installed
endef

.venv-colab/.installed: requirements-colab.txt
	$(call venv,.venv-colab,requirements-colab.txt)

.venv-backends/.installed: requirements.txt requirements-backends.txt
	$(call venv,.venv-backends,requirements.txt requirements-backends.txt)

## test-colab: with Colab's own package versions (the floors): unit tests, nbval, and Colab simulated
test-colab: .venv-colab/.installed
	.venv-colab/bin/python -m pytest tests --ignore=tests/test_series.py --ignore=tests/test_benchmarks.py
	$(QUICK_SYNTHETIC) .venv-colab/bin/python $(NBVAL)
	SALT_COLAB_SIMULATION=1 .venv-colab/bin/python -m pytest tests/test_colab_simulation.py

## test-backends: nbval over the four notebooks on the JAX and the PyTorch backends, and the
## unit test of what only JAX shows (the averaged weights sharing an array with the model's)
test-backends: .venv-backends/.installed
	for backend in jax torch; do \
	  echo "== KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend $(QUICK_SYNTHETIC) .venv-backends/bin/python $(NBVAL) || exit 1; \
	done
	KERAS_BACKEND=jax .venv-backends/bin/python -m pytest tests/test_training.py -k last_epochs_average

## lab: open JupyterLab on the series
lab: $(STAMP)
	$(BIN)/jupyter lab

## notebooks: refresh the committed notebooks' outputs from a real-data run in the class setting
REAL_RUN_DIR := runs/class-real
notebooks: $(STAMP)
	@test -n "$(SALT_DATA_DIR)" || { echo "Set SALT_DATA_DIR to the real data, e.g. SALT_DATA_DIR=../shared/tgs-salt make notebooks"; exit 1; }
	@if [ -e $(REAL_RUN_DIR) ]; then mv $(REAL_RUN_DIR) $(REAL_RUN_DIR).$$(date +%Y%m%d-%H%M%S); fi
	$(MAKE) run SALT_SETTING=class SALT_RUN_DIR=$(REAL_RUN_DIR)
	cp $(addprefix $(REAL_RUN_DIR)/,$(NOTEBOOKS)) .

clean-venv:
	rm -rf $(VENV) .venv-colab .venv-backends
