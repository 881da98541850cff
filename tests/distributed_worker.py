"""One rank of the 2-process runs of tests/test_distributed.py, launched by torchrun (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_worker.py OUT PARTS

PARTS (comma-separated): ``prune`` (`pruning_lib.prune` as a user calls it, before anything else: it must join
torchrun's process group itself), ``scores`` (every data criterion on this rank's shard), ``loop`` (Prune–Train–Repeat
with BatchNorm and a checkpoint in OUT; ``KILL_AT=i`` makes rank 1 die at iteration i's cut), ``plain`` (the
loop without BatchNorm, to compare with one process).  Each rank writes what it saw to OUT/rank<r>-<part>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from conftest import blobs  # noqa: E402

import pruning_lib  # noqa: E402
from pruning_lib import distributed  # noqa: E402
from pruning_lib.checkpoints import fingerprint  # noqa: E402
from pruning_lib.models import small_vgg  # noqa: E402
from pruning_lib.rank.criteria import rank_all  # noqa: E402
from pruning_lib.recover import train  # noqa: E402
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat  # noqa: E402

SHAPE = (1, 8, 8)
BATCH = 8                       # per process; one process with 2 * BATCH sees the same global batches
RANK_BATCHES = 2
DATA_CRITERIA = ["taylor", "mean_activation", "std_activation", "apoz"]
SCHEDULE = PruningSchedule(criterion="taylor", fraction_per_iteration=0.25, target_fraction=0.55, finetune_steps=4,
                           rank_batches=RANK_BATCHES, lr=1e-3, min_keep=1)


def model(batch_norm: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return small_vgg((4, "M", 8, "M", 8), in_channels=1, num_classes=3, hidden=8, dropout=0.0,
                     batch_norm=batch_norm).double()


def data(n: int, seed: int) -> TensorDataset:
    x, y = blobs(n, seed).tensors
    return TensorDataset(x.double(), y)


def ranking_batches(world_size: int, rank: int, batch: int) -> list:
    """The first RANK_BATCHES batches of a DistributedSampler at epoch 0: rank r's share of the global batches."""
    sampler = DistributedSampler(data(96, 0), num_replicas=world_size, rank=rank, shuffle=True, seed=0, drop_last=True)
    return list(DataLoader(data(96, 0), batch_size=batch, sampler=sampler))[:RANK_BATCHES]


class Watch(train.Callback):
    """Per iteration: the weights' digest after the cut; per step: whether the optimizer holds the live parameters."""

    def __init__(self, kill_at: int | None, rank: int):
        self.kill_at, self.rank = kill_at, rank
        self.digests, self.live, self.wrapped, self.optimizer = {}, [], set(), None

    def build(self, params):
        self.optimizer = torch.optim.Adam(params, lr=SCHEDULE.lr)
        return self.optimizer

    def on_prune(self, row, model):
        if row["iteration"] == self.kill_at and self.rank == 1:
            os._exit(17)                                    # a crash in the middle of an iteration
        self.digests[int(row["iteration"])] = fingerprint(model)

    def on_step(self, step, loss, model):
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        self.live.append(held == {id(p) for p in model.parameters() if p.requires_grad})
        self.wrapped.add(type(model).__name__)


def run_loop(out: Path, part: str, rank: int, batch_norm: bool, checkpoint: Path | None) -> None:
    kill_at = int(os.environ["KILL_AT"]) if os.environ.get("KILL_AT") else None
    watch = Watch(kill_at, rank)
    train_dl = DataLoader(data(96, 0), batch_size=BATCH, shuffle=True)      # the loop shards it
    val_dl = DataLoader(data(48, 1), batch_size=BATCH)
    pruned, history = prune_train_repeat(model(batch_norm), train_dl, val_dl, SCHEDULE, input_shape=SHAPE,
                                         checkpoint=checkpoint, callbacks=[watch], optimizer=watch.build, progress=False)
    widths = history[[c for c in history.columns if c.startswith("filters:")]].to_dict("list")
    (out / f"rank{rank}-{part}.json").write_text(json.dumps({
        "digests": watch.digests, "live": watch.live, "wrapped": sorted(watch.wrapped), "widths": widths,
        "accuracy": history["accuracy_after_finetune"].tolist(), "final": fingerprint(pruned)}))
    if rank == 0:
        torch.save(pruned.state_dict(), out / f"{part}-final.pt")


def run_prune(out: Path) -> None:
    """The README's snippet, unchanged, under torchrun."""
    train_dl = DataLoader(data(96, 0), batch_size=BATCH, shuffle=True)
    val_dl = DataLoader(data(48, 1), batch_size=BATCH)
    example_inputs = next(iter(train_dl))[0][:1]
    joined, join = [], distributed.join_from_environment
    distributed.join_from_environment = lambda: joined.append(join()) or joined[-1]      # what prune() joins
    pruned, history = pruning_lib.prune(model(True), example_inputs, train_dl, val_dl, flops_reduction=1.5,
                                        finetune_steps=2, progress=False)
    assert not torch.distributed.is_initialized()        # prune() destroyed the process group it created
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}-prune.json").write_text(json.dumps({
        "world_size": joined[0].world_size, "final": fingerprint(pruned),
        "gflops": history["gflops"].tolist()}))


def main() -> None:
    out, parts = Path(sys.argv[1]), sys.argv[2].split(",")
    if "prune" in parts:
        run_prune(out)
    collective = distributed.join_from_environment()    # a collective waiting 600 s (a rank died or hangs) fails
    assert collective.world_size == 2, collective
    rank = collective.rank
    if "scores" in parts:
        scores = rank_all(model(True), ranking_batches(2, rank, BATCH), DATA_CRITERIA)
        (out / f"rank{rank}-scores.json").write_text(json.dumps(
            {c: {g: s.tolist() for g, s in by_group.items()} for c, by_group in scores.items()}))
    if "loop" in parts:
        run_loop(out, "loop", rank, True, out / "loop.pt")
    if "plain" in parts:
        run_loop(out, "plain", rank, False, None)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
