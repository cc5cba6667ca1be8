# salt-unet: `make run` runs the series, `make test` runs the tests.
# Both create .venv from requirements.txt the first time (and again only when it changes).
# make test-colab, make test-jax and make test-backends build venvs of their own (.venv-colab,
# .venv-jax, .venv-backends).

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

.PHONY: run test test-fast test-colab test-jax test-mixed-precision test-backends lab pack notebooks clean-venv

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
# The notebooks' kernels fail on a deprecated call in the series' own code, as pytest.ini makes the
# tests fail (a kernel reads PYTHONWARNINGS at start; tests/support.py gives the kernels it starts the same).
KERNEL_WARNINGS = PYTHONWARNINGS=error::DeprecationWarning:helpers,error::PendingDeprecationWarning:helpers,error::DeprecationWarning:data_sources,error::PendingDeprecationWarning:data_sources

# nbval over the four notebooks (synthetic data, quick setting) into a fresh run folder, then
# AFTER (commands that read $$RUN/run); the folder is removed when all pass and kept for a look
# when something fails: $(call nbval,PYTHON,ENVIRONMENT,AFTER)
define nbval
	RUN=$$(mktemp -d); \
	  $(2) SALT_DATA_DIR=synthetic SALT_SETTING=quick SALT_RUN_DIR=$$RUN/run $(KERNEL_WARNINGS) $(1) $(NBVAL) $(3) \
	  && rm -rf "$$RUN" || { echo "The notebooks' run folder is kept for a look: $$RUN/run"; exit 1; }
endef

## test: every tier of tests/ (fast, slow, the benchmark's; the Colab simulation skips itself), then
## nbval over the four notebooks into a fresh run folder, then tests/after_notebooks on what that run left there
test: $(STAMP)
	$(BIN)/python -m pytest tests -m "not after_notebooks" --ignore=tests/gpu_path
	$(call nbval,$(BIN)/python,,&& SALT_SERIES_RUN_DIR=$$RUN/run $(BIN)/python -m pytest tests/after_notebooks)

## test-fast: the tests not marked slow (no training beyond a moment, no notebooks, no benchmark run)
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

.venv-jax/.installed: requirements-jax.txt requirements.txt
	$(call venv,.venv-jax,requirements-jax.txt)

.venv-backends/.installed: requirements.txt requirements-backends.txt
	$(call venv,.venv-backends,requirements.txt requirements-backends.txt)

## test-colab: with Colab's own package versions (the floors): the fast and slow tests (Colab's versions
## do not run the benchmark: tests/benchmark is left out), nbval, and Colab simulated (tests/colab)
test-colab: .venv-colab/.installed
	.venv-colab/bin/python -m pytest tests/fast tests/slow tests/gpu_path
	$(call nbval,.venv-colab/bin/python)
	SALT_COLAB_SIMULATION=1 .venv-colab/bin/python -m pytest tests/colab

## test-jax: the fast tests on the JAX backend with no TensorFlow installed (.venv-jax), among them
## the check that bites on JAX only (the averaged weights never share an array with the model's),
## and the GPU path's mixed_float16 training on JAX (tests/gpu_path)
test-jax: .venv-jax/.installed
	KERAS_BACKEND=jax .venv-jax/bin/python -m pytest tests/fast tests/gpu_path

## test-mixed-precision: the GPU path on this CPU (float16, slowly): tests/gpu_path (mixed_float16
## trained, cut off, resumed, against float32), then nbval over the four notebooks with
## SALT_PRECISION=mixed_float16, the policy 03 turns on when it finds a GPU
test-mixed-precision: $(STAMP)
	$(BIN)/python -m pytest tests/gpu_path
	$(call nbval,$(BIN)/python,SALT_PRECISION=mixed_float16)

## test-backends: nbval over the four notebooks on the JAX and the PyTorch backends (TensorFlow
## installed beside them), and the JAX-only check there too
test-backends: .venv-backends/.installed
	@echo "== KERAS_BACKEND=jax"
	$(call nbval,.venv-backends/bin/python,KERAS_BACKEND=jax)
	@echo "== KERAS_BACKEND=torch"
	$(call nbval,.venv-backends/bin/python,KERAS_BACKEND=torch)
	KERAS_BACKEND=jax .venv-backends/bin/python -m pytest tests/fast/test_training_callbacks.py -k last_epochs_average

## lab: open JupyterLab on the series
lab: $(STAMP)
	$(BIN)/jupyter lab

## pack: one file with the labelled slices and the test images of SALT_DATA_DIR, for a class
## (data/tgs-salt.npz; students set SALT_DATA_DIR to it). It is a copy of Kaggle's data: never commit it.
PACKED := data/tgs-salt.npz
pack: $(STAMP)
	@test -n "$(SALT_DATA_DIR)" || { echo "Set SALT_DATA_DIR to the competition zip or folder, e.g. SALT_DATA_DIR=~/Downloads/tgs-salt-identification-challenge.zip make pack"; exit 1; }
	$(BIN)/python -c "import helpers; d = helpers.load_salt_data(); print('wrote', helpers.pack_salt_data(d, '$(PACKED)', d.folder))"
	@du -h $(PACKED)

## notebooks: refresh the committed notebooks' outputs from a real-data run in the class setting
REAL_RUN_DIR := runs/class-real
notebooks: $(STAMP)
	@test -n "$(SALT_DATA_DIR)" || { echo "Set SALT_DATA_DIR to the real data, e.g. SALT_DATA_DIR=../shared/tgs-salt make notebooks"; exit 1; }
	@if [ -e $(REAL_RUN_DIR) ]; then mv $(REAL_RUN_DIR) $(REAL_RUN_DIR).$$(date +%Y%m%d-%H%M%S); fi
	$(MAKE) run SALT_SETTING=class SALT_RUN_DIR=$(REAL_RUN_DIR)
	cp $(addprefix $(REAL_RUN_DIR)/,$(NOTEBOOKS)) .
	$(BIN)/python tools/hide_answers.py

clean-venv:
	rm -rf $(VENV) .venv-colab .venv-jax .venv-backends
