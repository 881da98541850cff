#!/usr/bin/env bash
# The full profile (the post's experiment: ImageNet VGG16 fine-tuned on cats vs dogs, pruned by Taylor
# Prune–Train–Repeat), headless, on a machine with a GPU.  Run it from the repository root:
#
#   PRUNING_KAGGLE_DIR=/data/dogs-vs-cats bash benchmarks/run_full_profile.sh      # or PRUNING_DOWNLOAD=1 (Oxford-IIIT Pet)
#
# First a preflight (data, weights, device, disk, and a time estimate from timed training steps); then the
# five notebooks through `python -m pruning_lib.course.demo --profile full`.  Executed notebooks go to build/,
# reports to reports/ (summary.json, lessons.json, ...).  Every loop is checkpointed in checkpoints/: run the
# script again after an interruption and it resumes.  Extra profile changes: PRUNING_OVERRIDES="...".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || make setup
start=$(date +%s)
"$PY" -m pruning_lib.course.preflight --profile full
"$PY" -m pruning_lib.course.demo --profile full
echo "full profile: $(( $(date +%s) - start )) s; reports in reports/"
