"""Benchmark: does "too much at once cannot be repaired" show on a harder, four-class target task?

    python benchmarks/harder_target.py [--seeds 0 1] [--per-class 100 50] [--jobs 2] [--out build/harder_target]

The quick profile's lesson does not show on T-shirt/top vs Shirt (the README's calibration table): removing 80%
of the filters at once and fine-tuning for Prune–Train–Repeat's whole budget recovers as well.  One reason could
be that two classes are easy to recover (a chance-level network finds one boundary again in a few steps).  This
script tests a harder target: the four upper-body garments (T-shirt/top, Pullover, Coat, Shirt; chance 25%),
transferred from a small VGG pretrained by the same recipe as the course's (`course.source`, here 1,500 steps)
on the other six classes, with `per-class` training and as many validation images per class (Debian's full
Fashion-MNIST, `/usr/share/datasets/fashion-mnist/`), tested on the 4,000 official test images of the four.

Everything else is the quick profile's, on both sides of each comparison: the baseline's two-stage fine-tune,
Prune–Train–Repeat with Taylor to 80% of the filters, `arms.one_shot_same_budget`, and the Taylor architecture
from scratch with the same steps and loss (`arms.from_scratch`).  One torch thread per run, `--jobs` runs at a
time; prints the machine and a table, writes ``results.json``.  About 6 minutes for the source network, then
about 1.5 minutes per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import time
from pathlib import Path

import torch

from pruning_lib import data, models
from pruning_lib.recover import train
from pruning_lib.checkpoints import load_checkpoint, save_checkpoint
from pruning_lib.course import arms, experiment, lessons
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.course.profiles import QUICK
from pruning_lib.course.source import Augmented
from pruning_lib.recover.distill import KnowledgeDistillation
from pruning_lib.recover.evaluation import correct
from pruning_lib.recover.iterative import prune_train_repeat
from pruning_lib.measure import count_flops, machine_info
from pruning_lib.runtime import num_threads, seed_everything

TARGET = (0, 2, 4, 6)                                   # T-shirt/top, Pullover, Coat, Shirt
SOURCE = tuple(c for c in range(10) if c not in TARGET)  # Trouser, Dress, Sandal, Sneaker, Bag, Ankle boot


def pretrain_source(path: Path, steps: int = 1500) -> Path:
    """`course.source`'s recipe (Adam, one-cycle up to 2e-3, batch 128, flips and shifts) on the six source classes."""
    if path.exists():
        return path
    seed_everything(0)
    model = models.small_vgg(num_classes=len(SOURCE))
    loader = Augmented(data.make_loader(data.fashion_mnist_full("train", SOURCE), 128, shuffle=True, seed=0), seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    with num_threads(1):
        train.fit(model, loader, steps=steps, optimizer=optimizer, progress=False,
                  callbacks=[train.FunctionCallback(on_step=lambda *_: schedule.step())])
    save_checkpoint(path, model, meta={"classes": list(SOURCE), "steps": steps})
    return path


def baseline(source: Path, train_loader, val_batches, profile) -> torch.nn.Module:
    """The course's transfer (`experiment.transfer`: head only, then all layers to a plateau) on this target."""
    seed_everything(profile.seed)
    model = models.small_vgg(num_classes=len(SOURCE))
    load_checkpoint(source, model)
    torch.manual_seed(profile.seed)
    return experiment.transfer(models.replace_head(model, len(TARGET)), train_loader, val_batches, profile,
                               progress=False)[0]


def run(args: tuple[int, int, str]) -> dict:
    """One seed and training-set size: dense, Prune–Train–Repeat, one shot with its budget, the same architecture from scratch."""
    seed, per_class, source = args
    torch.set_num_threads(1)
    start = time.perf_counter()
    profile = dataclasses.replace(QUICK, seed=seed, train_images=per_class * len(TARGET), val_images=per_class * len(TARGET))
    train_set, val_set, _ = data.split_per_class(data.fashion_mnist_full("train", TARGET), [per_class, per_class, None], seed=seed)
    train_loader = data.make_loader(train_set, profile.batch_size, shuffle=True, seed=seed)
    val_batches = list(data.make_loader(val_set, profile.eval_batch, shuffle=False))
    test_batches = list(data.make_loader(data.fashion_mnist_full("test", TARGET), profile.eval_batch, shuffle=False))
    dense = baseline(Path(source), train_loader, val_batches, profile)
    schedule = experiment.schedule("taylor", profile)
    loop, history = prune_train_repeat(dense, train_loader, val_batches, schedule, input_shape=profile.input_shape, progress=False)
    once, once_history = arms.one_shot_same_budget(dense, history, schedule, train_loader, val_batches,
                                                   input_shape=profile.input_shape)
    steps = int(history["finetune_steps"].sum())
    scratch = arms.from_scratch(loop, models.small_vgg(num_classes=len(TARGET)), train_loader, steps=steps,
                                lr=profile.baseline_lr, loss_fn=KnowledgeDistillation(dense, profile.distill, profile.temperature),
                                lr_schedule=profile.lr_schedule, seed=seed)
    c = {name: correct(m, test_batches) for name, m in
         {"dense": dense, "prune-train-repeat": loop, "one shot": once, "from scratch": scratch}.items()}
    too_much = lessons.compare("too much at once", {"prune-train-repeat": c["prune-train-repeat"], "one shot": c["one shot"]},
                               threshold_points=2.0)
    beats = lessons.compare("pruning beats scratch", {"pruned": c["prune-train-repeat"], "from scratch": c["from scratch"]},
                            threshold_points=2.0)
    mflops = {name: count_flops(m, (1, *profile.input_shape)) / 1e6 for name, m in (("prune-train-repeat", loop), ("one shot", once))}
    return {"seed": seed, "per_class": per_class, "accuracy": {k: lessons.points(v) for k, v in c.items()},
            "one_shot_right_after": 100 * float(once_history["accuracy_before_finetune"].iloc[-1]), "steps": steps,
            "mflops": mflops, "too_much_at_once": too_much, "pruning_beats_scratch": beats,
            "seconds": time.perf_counter() - start}


def table(results: list[dict]) -> str:
    lines = ["| training images per class | seed | dense | Prune–Train–Repeat | one shot (right after) | PTR − one shot | "
             "from scratch | PTR − scratch |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        a, t, b = r["accuracy"], r["too_much_at_once"], r["pruning_beats_scratch"]
        lines.append(f"| {r['per_class']} | {r['seed']} | {a['dense']:.2f} | {a['prune-train-repeat']:.2f} | "
                     f"{a['one shot']:.2f} ({r['one_shot_right_after']:.0f}) | {t['gap_points']:+.2f} ± {t['noise_points']:.2f} "
                     f"{'✓' if t['shows'] else '✗'} | {a['from scratch']:.2f} | {b['gap_points']:+.2f} ± {b['noise_points']:.2f} "
                     f"{'✓' if b['shows'] else '✗'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--per-class", type=int, nargs="+", default=[100, 50])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "harder_target")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print("machine:", json.dumps(machine_info()), flush=True)
    source = pretrain_source(args.out / "source_6_classes.pt")
    jobs = [(seed, n, str(source)) for n in args.per_class for seed in args.seeds]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(run, jobs)
    print(table(results))
    (args.out / "results.json").write_text(json.dumps({"machine": machine_info(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
