"""Several processes, one Prune–Train–Repeat: the few collective operations the loop needs, on torch.distributed.

Launch with ``torchrun`` (``torchrun --standalone --nproc_per_node=2 your_script.py``); the loop (and
`pruning_lib.prune`) then finds the process group itself (`current`, `join_from_environment`).  The interface is
small on purpose, and maps one to one onto Lightning Fabric (``all_reduce``, ``broadcast``, ``barrier``,
``all_gather``, ``setup``) or Accelerate (``reduce``, ``broadcast_object_list``, ``wait_for_everyone``,
``gather_object``, ``prepare``) should a user bring them:

- ``all_reduce(tensor)``: the sum over all processes (statistics, example counts, correct predictions);
- ``broadcast(obj)``: rank 0's Python object on every rank (the plan of a cut, a stop decision);
- ``all_gather(obj)``: every rank's object, in rank order (digests of the weights, to check they agree);
- ``barrier()``: wait for every rank (after rank 0 writes a checkpoint);
- ``wrap(model)``: the model to train, under `DistributedDataParallel` (a single process: the model itself).

Process management is torchrun's: nothing here starts, watches or restarts a process.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

__all__ = ["Collective", "EvaluationShard", "TorchDistributed", "average_buffers", "check_same", "current",
           "join_from_environment", "shard_loader", "sharded", "synchronised_batchnorm"]


class Collective:
    """The interface, as one process runs it: every collective is the identity (what `current` returns off
    torchrun).  `TorchDistributed` runs the same methods on torch.distributed."""

    rank = 0
    world_size = 1

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over all processes, in place: here the tensor itself."""
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's object: here `obj`."""
        return obj

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order: here ``[obj]``."""
        return [obj]

    def barrier(self) -> None:
        """Wait for every rank: nothing to wait for."""

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train: the model itself."""
        return model


class TorchDistributed(Collective):
    """The default process group of torch.distributed (NCCL or gloo), already initialised."""

    def __init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("no torch.distributed process group: launch with torchrun (which sets RANK, WORLD_SIZE, "
                               "MASTER_ADDR) and call join_from_environment() first")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.device = (torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl"
                       else torch.device("cpu"))

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        on_backend = tensor.to(self.device)
        dist.all_reduce(on_backend, op=dist.ReduceOp.SUM)
        if on_backend is not tensor:
            tensor.copy_(on_backend)
        return tensor

    def broadcast(self, obj: Any) -> Any:
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel over `model` (its gradients averaged over ranks at every backward); on CUDA, each
        rank's own GPU.  Build it again after every cut: DDP holds the parameters it was built with."""
        device = next(model.parameters()).device
        if device.type == "cuda":          # the layout train.fit trains in there, set before DDP sees the parameters
            model.to(memory_format=torch.channels_last)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def current() -> Collective:
    """`TorchDistributed` when a process group of two or more processes is initialised, else `Collective()` (one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributed()
    return Collective()


def join_from_environment(*, timeout_s: float = 600.0) -> Collective:
    """Under torchrun (``WORLD_SIZE`` > 1 in the environment), join the process group unless this process already
    has: NCCL on CUDA (each rank on the GPU ``LOCAL_RANK``), gloo on CPU.  A collective that waits longer than
    `timeout_s` (a rank that died or hangs) fails instead of hanging.  Returns `current()`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE is set but {missing} are not: launch with torchrun (e.g. torchrun "
                               "--standalone --nproc_per_node=2 script.py), which sets them all")
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return current()


class EvaluationShard(Sampler[int]):
    """Rank r of w reads examples r, r + w, r + 2w, ... of the dataset in order, none twice and none padded, so
    counts added up over ranks are those of one process reading everything (`DistributedSampler` pads the last
    shard with repeated examples, which would count them twice)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return max(0, math.ceil((self.length - self.rank) / self.world_size))


def shard_loader(loader: DataLoader, collective: Collective, *, train: bool, seed: int = 0) -> DataLoader:
    """The same loader (batch size per process, workers, collate function) over this rank's share of its dataset:
    for training and ranking, `DistributedSampler` (shuffled, the last incomplete share dropped, reshuffled by
    ``set_epoch``); for evaluation, `EvaluationShard`.  A training loader that already has a DistributedSampler is
    kept; an evaluation loader with one is re-made (its padding would count some examples twice)."""
    if isinstance(loader.sampler, DistributedSampler if train else EvaluationShard):
        return loader
    dataset = loader.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError("an IterableDataset cannot be split between processes by the loop: shard it yourself (each "
                        "rank its own part) and pass a DataLoader with a DistributedSampler")
    sampler = (DistributedSampler(dataset, num_replicas=collective.world_size, rank=collective.rank, shuffle=True,
                                  seed=seed, drop_last=True) if train
               else EvaluationShard(len(dataset), collective.rank, collective.world_size))
    extra = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers else {}
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers, **extra)


def sharded(loader: Any, collective: Collective, *, train: bool, seed: int = 0) -> Any:
    """`shard_loader` under several processes (for evaluation, a list of batches is dealt out batch by batch); the
    loader itself in one process.  Refuses what it cannot share out."""
    if collective.world_size == 1:
        return loader
    if not train and isinstance(loader, (list, tuple)):      # batches in memory: each rank evaluates every w-th one
        return loader[collective.rank::collective.world_size]
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError(f"under {collective.world_size} processes the loop splits the data between them itself: pass a "
                        f"torch DataLoader with a batch_size over a map-style dataset, not a {type(loader).__name__}")
    return shard_loader(loader, collective, train=train, seed=seed)


def average_buffers(model: nn.Module, collective: Collective) -> None:
    """After training under DDP, make every process hold the same buffers again: their mean over processes.

    DDP sends rank 0's buffers to every process at the start of each forward pass, but that pass then updates
    BatchNorm's running statistics with the process's own batch, so after the last step each process holds its
    own.  Their mean is what one process would have estimated from all the last batches, up to the running
    average's weighting; integer buffers (``num_batches_tracked``) are equal everywhere already."""
    if collective.world_size == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            collective.all_reduce(buffer.data)
            buffer.data.div_(collective.world_size)


def check_same(collective: Collective, digest: str, what: str) -> None:
    """Every rank must hold the same `what` (compared by a digest, e.g. `checkpoints.fingerprint`): a RuntimeError
    naming the ranks that differ from rank 0 otherwise, on every rank, before anything trains on it."""
    digests = collective.all_gather(digest)
    differ = [rank for rank, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RuntimeError(f"{what} differs between processes: rank(s) {differ} do not hold what rank 0 holds. Every "
                           "rank must start from the same weights (load the same file on each) and apply the same plan")


@contextmanager
def synchronised_batchnorm(model: nn.Module, collective: Collective) -> Iterator[nn.Module]:
    """While training on CUDA under several processes, every BatchNorm normalises by the batch of all ranks
    (`SyncBatchNorm`, sharing the module's parameters and running statistics); afterwards the model's own
    BatchNorm modules are back, so the model can be traced and pruned again.  Elsewhere nothing changes: on CPU
    torch has no SyncBatchNorm, and each process normalises by its own batch (as DDP does without it)."""
    swapped = []
    first = next(model.parameters(), None)
    if collective.world_size > 1 and first is not None and first.device.type == "cuda":
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm):
                    setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
                    swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
