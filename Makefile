# The course in two commands:  make demo  (run the whole tutorial headless)  and  make test.
# Every target sets itself up on a fresh machine: it creates .venv and installs into it when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick
SHELL  := /bin/bash
export PRUNING_PROFILE := $(PROFILE)

.PHONY: demo test test-lib test-full test-browser test-notebooks lab bench bench-distill bench-groups bench-resnet bench-harder-target bench-latency bench-latency-target bench-distributed calibrate preflight setup clean

setup: $(STAMP)

# .[dev] is everything make's targets use: the library, the course (notebooks, widgets, papermill), the runtimes
# (deploy, openvino) and the test tools. Editing pyproject.toml makes the stamp stale, so the next target reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pruning course)" >/dev/null
	touch $(STAMP)

## Run every notebook, headless, in the quick profile; results in build/ and reports/.  On two cores or more the
## Prune–Train–Repeat runs and notebook 02 use the second core (pruning_lib/course/lanes.py); make demo
## DEMO_ARGS="--lanes 1" runs one notebook at a time.
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m pruning_lib.course.demo $(DEMO_ARGS)

## pytest on tests/ (the library, the full profile's smoke run, the widgets in a real browser) and nbval on
## notebooks/; each part is timed.  Two lanes run side by side, one per core, each with one torch thread: the
## notebooks (nbval, in the repository's checkpoints/, reports/ and build/, as a student runs them) and the rest
## (test-lib, test-full, test-browser, one after the other, in build/test-lane/ so that the lanes share no file).
## Their lines are prefixed [notebooks] and [library].  make test times nothing it reports: its figures are
## make demo's and the benchmarks', each run alone.  LANES=1 runs the four parts one after the other instead.
LANES ?= 2
test: $(STAMP)
ifeq ($(LANES),1)
	$(call timed,make test (one lane),$(MAKE) --no-print-directory test-lib test-full test-browser test-notebooks)
else
	$(call timed,make test (two lanes),$(MAKE) --no-print-directory -j2 lane-notebooks lane-library)
endif

# $(call lane,NAME,COMMAND): COMMAND with one torch thread, its output prefixed [NAME], its exit status kept.
lane = @set -o pipefail; ( export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MAKEFLAGS="$(SERIAL_MAKEFLAGS)"; $(2) ) 2>&1 | sed -u 's/^/[$(1)] /'
LANE_DIR := build/test-lane
# the lanes run their parts one after the other: without the parent's -j2 and jobserver
SERIAL_MAKEFLAGS = $(filter-out -j% --jobserver-auth=% --jobserver-fds=%,$(MAKEFLAGS))

.PHONY: lane-notebooks lane-library
lane-notebooks: $(STAMP)
	$(call lane,notebooks,$(MAKE) --no-print-directory test-notebooks)

lane-library: $(STAMP)
	@rm -rf $(LANE_DIR) && mkdir -p $(LANE_DIR)/checkpoints $(LANE_DIR)/reports $(LANE_DIR)/build
	$(call lane,library,export PRUNING_CHECKPOINT_DIR=$(CURDIR)/$(LANE_DIR)/checkpoints \
	  PRUNING_REPORTS_DIR=$(CURDIR)/$(LANE_DIR)/reports PRUNING_BUILD_DIR=$(CURDIR)/$(LANE_DIR)/build; \
	  $(MAKE) --no-print-directory test-lib test-full test-browser)

# $(call timed,NAME,COMMAND): run COMMAND, then print how long it took.
timed = @start=$$(date +%s); $(2); rc=$$?; echo "== $(1) took $$(( $$(date +%s) - start )) s"; exit $$rc

test-lib: $(STAMP)
	$(call timed,test-lib (pytest tests),$(PY) -m pytest tests -q -rs --durations=5 --ignore=tests/test_browser.py --ignore=tests/test_full_profile.py)

## The full profile, small, on CPU: all five notebooks on a generated Kaggle folder and random VGG16 and ResNet-18 weights.
test-full: $(STAMP)
	$(call timed,test-full (full profile smoke run),$(PY) -m pytest tests/test_full_profile.py -q -rsP)

## JupyterLab + headless Chromium: the widgets of notebooks 02 and 03 (skips, saying why, without a browser).
test-browser: $(STAMP)
	$(call timed,test-browser (JupyterLab + Chromium),$(PY) -m pytest tests/test_browser.py -q -rs)

test-notebooks: $(STAMP)
	$(call timed,test-notebooks (nbval),$(PY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks -q -p no:cacheprovider --durations=4)

## JupyterLab on the notebooks.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

## One Prune–Train–Repeat iteration on 1 and NPROC processes (torchrun; gloo on CPU, NCCL on GPUs), interleaved.
NPROC ?= 2
bench-distributed: $(STAMP)
	$(PY) benchmarks/distributed_scaling.py --nproc $(NPROC)

## Benchmarks (scripts, not tests): surgery + Taylor cost, then notebook 04's speed and size figures.
bench: $(STAMP)
	$(PY) benchmarks/bench_surgery.py
	$(PY) benchmarks/bench_speed.py

## Channel groups: every torchvision classification model pruned or refused (README table), and three ways of adding up
## Taylor over a group against the group oracle (about 15 min on 2 cores).
bench-groups: $(STAMP)
	$(PY) benchmarks/zoo_groups.py
	$(PY) benchmarks/group_taylor_aggregations.py

## Notebook 05's schedule: every Prune–Train–Repeat schedule tried on the small ResNet (README table; ~10 min on 2 cores).
bench-resnet: $(STAMP)
	$(PY) benchmarks/resnet_schedules.py

## Pruning for FLOPs, for FLOPs in blocks of 16, or for measured time (latency tables), side by side at equal
## accuracy: the quick VGG and the small ResNet, three seeds, deploy form and ONNX Runtime (about an hour on 2 cores).
bench-latency: $(STAMP)
	$(PY) benchmarks/latency_arms.py

## torchvision's ResNet-18 at 112x112 asked for target_speedup=2, checked by an independent timer and for exactness
## (random weights; at 112x112 it had not reached 2x after 19 min on 2 cores: README).
bench-latency-target: $(STAMP)
	$(PY) benchmarks/latency_target.py

## What fine-tuning with the dense network as teacher buys (about 20 min on 2 cores).
bench-distill: $(STAMP)
	$(PY) benchmarks/bench_distill.py

## Too much at once on a harder, four-class target (needs Debian's dataset-fashion-mnist; ~12 min on 2 cores).
bench-harder-target: $(STAMP)
	$(PY) benchmarks/harder_target.py

## The lessons over several seeds (notebooks 01-03 per seed; about 30 min on 2 cores).
calibrate: $(STAMP)
	$(PY) benchmarks/calibrate_lessons.py

## What the profile's run needs, checked before any long work (PROFILE=full for the full profile).
preflight: $(STAMP)
	$(PY) -m pruning_lib.course.preflight

clean:
	rm -rf build .pytest_cache
