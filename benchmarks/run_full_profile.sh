#!/usr/bin/env bash
# The full profile (the post's experiment: ImageNet VGG16 fine-tuned on cats vs dogs, pruned by Taylor
# Prune–Train–Repeat), headless, on a machine with a GPU.  Run it from the repository root:
#
#   PRUNING_KAGGLE_DIR=/data/dogs-vs-cats bash benchmarks/run_full_profile.sh      # or PRUNING_DOWNLOAD=1 (Oxford-IIIT Pet)
#   PRUNING_KAGGLE_DIR=/data/dogs-vs-cats bash benchmarks/run_full_profile.sh 4    # notebook 03's loops on 4 GPUs
#
# First a preflight (data, weights, device, disk, and a time estimate from timed training steps); then the
# five notebooks through `python -m pruning_lib.course.demo --profile full`.  With a number of processes N > 1,
# notebook 01 runs first (the fine-tuned baseline), then notebook 03's Prune–Train–Repeat runs on N processes
# (`torchrun --standalone --nproc_per_node=N -m pruning_lib.course.loops`: DDP, NCCL on GPUs, gloo on CPU; the batch
# size is per process), then every notebook: notebook 03 reads its finished runs back from checkpoints/.
# Executed notebooks go to build/, reports to reports/ (summary.json, lessons.json, ...).  Every loop is
# checkpointed in checkpoints/: run the script again after an interruption and it resumes.  Extra profile
# changes: PRUNING_OVERRIDES="...".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NPROC=${1:-1}
case "$NPROC" in ''|*[!0-9]*|0) echo "usage: $0 [number of processes >= 1], got '$NPROC'" >&2; exit 2;; esac
[ -x "$PY" ] || make setup
start=$(date +%s)
"$PY" -m pruning_lib.course.preflight --profile full
if [ "$NPROC" -gt 1 ]; then
  "$PY" -m pruning_lib.course.demo --profile full --only 01
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m pruning_lib.course.loops --profile full
fi
"$PY" -m pruning_lib.course.demo --profile full
echo "full profile ($NPROC process(es) for notebook 03's loops): $(( $(date +%s) - start )) s; reports in reports/"
