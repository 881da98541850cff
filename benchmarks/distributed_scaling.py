"""How much faster is one Prune–Train–Repeat iteration on N processes than on one?  Time it on your machine.

    python benchmarks/distributed_scaling.py --nproc 2                       # CPU: gloo, the cores shared out
    python benchmarks/distributed_scaling.py --nproc 4 --model resnet18      # 4 GPUs: NCCL, one GPU per process

One iteration is what the loop repeats: rank the filters over a few batches, cut a tenth of them, fine-tune for
`--steps` steps, evaluate.  The global batch is the same for every N (each process gets ``global / N``), so the
N-process run does the same computation as the one-process run, shared out (strong scaling).  Each
configuration runs in its own ``torchrun --standalone`` launch, the arms interleaved, `--repeats` times; the table
gives the median seconds per iteration, their spread, and the speedup over one process.  On CPU each of N
processes gets cores / N threads, so every arm uses the whole machine.  Data: the embedded Fashion-MNIST (for
ResNet-18 resized to 112 x 112, three channels); weights: a fresh initialisation (this times work, it does not
produce a network worth keeping).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_lib import distributed  # noqa: E402
from pruning_lib.data.fashion import fashion_mnist  # noqa: E402
from pruning_lib.models import small_vgg  # noqa: E402
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat  # noqa: E402

MARK = "ITERATION_SECONDS "


class RGB(Dataset):
    """Fashion-MNIST at `size` x `size`, three channels (what ResNet-18 expects)."""

    def __init__(self, base, size: int):
        self.base, self.size = base, size

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return x.expand(3, -1, -1), y


def build(model_name: str):
    torch.manual_seed(0)
    train, test = fashion_mnist("train"), fashion_mnist("test")
    if model_name == "small_vgg":
        return small_vgg(), train, test, (1, 28, 28)
    import torchvision
    return torchvision.models.resnet18(num_classes=10), RGB(train, 112), RGB(test, 112), (3, 112, 112)


def worker(args) -> None:
    collective = distributed.join_from_environment(timeout_s=300)
    n = collective.world_size
    model, train, test, shape = build(args.model)
    if torch.cuda.is_available():
        model.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
    per_process = args.global_batch // n
    schedule = PruningSchedule(fraction_per_iteration=0.1, target_fraction=0.1, finetune_steps=args.steps,
                               rank_batches=4, lr=1e-3)
    _, history = prune_train_repeat(model, DataLoader(train, batch_size=per_process, shuffle=True),
                                    DataLoader(test, batch_size=per_process), schedule, input_shape=shape,
                                    progress=False)
    if collective.rank == 0:
        print(MARK + json.dumps({"processes": n, "seconds": float(history["time_s"].iloc[1])}), flush=True)


def launch(n: int, args) -> float:
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               __file__, "--worker", "--model", args.model, "--global-batch", str(args.global_batch),
               "--steps", str(args.steps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode:
        raise SystemExit(f"{n} process(es) failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith(MARK))
    return json.loads(line[len(MARK):])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2, help="processes to compare with one (GPUs, or CPU processes)")
    parser.add_argument("--model", choices=["small_vgg", "resnet18"], default="small_vgg")
    parser.add_argument("--global-batch", type=int, default=64, help="examples per step over all processes")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps in the iteration")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a launch is killed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.global_batch % args.nproc:
        raise SystemExit(f"--global-batch {args.global_batch} must split evenly over {args.nproc} processes")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"{args.model}, global batch {args.global_batch}, {args.steps} fine-tuning steps; {device}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{'NCCL' if torch.cuda.is_available() else 'gloo'}; {time.strftime('%Y-%m-%d')}")
    seconds: dict[int, list[float]] = {1: [], args.nproc: []}
    for _ in range(args.repeats):
        for n in seconds:                                   # the arms interleaved
            seconds[n].append(launch(n, args))
    one = statistics.median(seconds[1])
    print(f"{'processes':>9}  {'s / iteration (median)':>22}  {'min-max':>13}  speedup")
    for n, runs in seconds.items():
        print(f"{n:>9}  {statistics.median(runs):>22.2f}  {min(runs):>6.2f}-{max(runs):<6.2f}  "
              f"{one / statistics.median(runs):.2f}x")


if __name__ == "__main__":
    main()
