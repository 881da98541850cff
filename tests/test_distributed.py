"""Prune–Train–Repeat on 2 CPU processes (torchrun, gloo) against one process seeing the same global batches.

Three torchrun launches (a free port each: ``--standalone``; a collective that waits 600 s fails, a launch still
running after LAUNCH_HANG_S is stopped as a hang: no verdict depends on the machine's speed): an uninterrupted
run, a run whose rank 1 dies in the middle of iteration 2, and the same command again, which resumes.  The
single-process references run here, in the test's own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

import distributed_worker as worker
from conftest import assert_loops_read_back
from pruning_lib import distributed
from pruning_lib.rank.criteria import rank_all
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available in this build of torch")

WORKER = Path(worker.__file__)
LAUNCH_HANG_S = 3600     # a hang bound, never a speed bound: each launch takes under a minute on 2 cores


def launch(command: list[str], environment: dict) -> subprocess.CompletedProcess:
    """Run `command`; a launch still running after LAUNCH_HANG_S fails as a hang, with the end of its output."""
    try:
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=LAUNCH_HANG_S)
    except subprocess.TimeoutExpired as err:
        out, errors = (text.decode(errors="replace") if isinstance(text, bytes) else text or ""
                       for text in (err.stdout, err.stderr))
        pytest.fail(f"`{' '.join(command[1:])}` did not end within {LAUNCH_HANG_S} s (a hang bound); its output "
                    f"ends:\n{out[-2000:]}\n--- its stderr ends ---\n{errors[-3000:]}", pytrace=False)


def torchrun(out: Path, parts: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environment.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=0",
               str(WORKER), str(out), parts]
    return launch(command, environment)


def read(out: Path, part: str) -> list[dict]:
    return [json.loads((out / f"rank{r}-{part}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted run (scores, loop, plain) and the killed-then-resumed loop."""
    whole, killed = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("killed")
    done = torchrun(whole, "prune,scores,loop,plain")
    assert done.returncode == 0, done.stderr[-4000:]
    crash = torchrun(killed, "loop", KILL_AT="2")
    resumed = torchrun(killed, "loop")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    return {"whole": whole, "killed": killed, "crash": crash}


def one_process_loader(dataset, batch):
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    return DataLoader(dataset, batch_size=batch, sampler=sampler)


def test_scores_equal_one_process_seeing_every_shard(runs):
    single = rank_all(worker.model(True), worker.ranking_batches(1, 0, 2 * worker.BATCH), worker.DATA_CRITERIA)
    for seen in read(runs["whole"], "scores"):
        for criterion, by_group in single.items():
            for group, scores in by_group.items():
                torch.testing.assert_close(torch.tensor(seen[criterion][group]), scores, rtol=1e-5, atol=1e-7,
                                           msg=f"{criterion} of {group}")


def test_prune_runs_unchanged_under_torchrun(runs):
    first, second = read(runs["whole"], "prune")
    assert first["world_size"] == second["world_size"] == 2            # it joined torchrun's group itself
    assert first["final"] == second["final"] and first["gflops"][-1] <= first["gflops"][0] / 1.5


def test_both_ranks_hold_the_same_network_after_every_cut(runs):
    first, second = read(runs["whole"], "loop")
    assert first["digests"] and first["digests"] == second["digests"]
    assert first["final"] == second["final"] and first["widths"] == second["widths"]


def test_fine_tuning_runs_under_ddp_with_an_optimizer_on_the_live_parameters(runs):
    for seen in read(runs["whole"], "loop"):
        assert seen["wrapped"] == ["DistributedDataParallel"]
        assert seen["live"] and all(seen["live"])


def test_a_killed_run_resumed_with_the_same_command_ends_as_an_uninterrupted_one(runs):
    assert runs["crash"].returncode != 0                 # rank 1 died in iteration 2
    whole, resumed = read(runs["whole"], "loop")[0], read(runs["killed"], "loop")[0]
    assert sorted(resumed["digests"]) == [str(i) for i in range(2, len(whole["widths"]["filters:features.0"]))]
    assert resumed["widths"] == whole["widths"]
    assert resumed["final"] == whole["final"]


def test_two_processes_prune_the_filters_one_process_prunes_with_the_same_global_batches(runs):
    pruned, history = prune_train_repeat(
        worker.model(False), one_process_loader(worker.data(96, 0), 2 * worker.BATCH),
        DataLoader(worker.data(48, 1), batch_size=worker.BATCH), worker.SCHEDULE, input_shape=worker.SHAPE,
        progress=False)
    two = read(runs["whole"], "plain")[0]
    assert two["widths"] == history[[c for c in history.columns if c.startswith("filters:")]].to_dict("list")
    assert two["accuracy"] == pytest.approx(history["accuracy_after_finetune"].tolist(), abs=1e-12)
    state = torch.load(runs["whole"] / "plain-final.pt", weights_only=True)
    for name, tensor in pruned.state_dict().items():   # the same filters kept: the same weights, to rounding
        torch.testing.assert_close(state[name], tensor, rtol=1e-7, atol=1e-9, msg=name)


def test_notebook_03s_loops_on_two_processes_are_read_back_by_the_notebooks_calls(tmp_path, monkeypatch):
    """`benchmarks/run_full_profile.sh N`'s path, small: course.loops under torchrun, then notebook 03's calls."""
    from pruning_lib.course import arms, experiment, loops
    from pruning_lib.course.profiles import get_profile

    monkeypatch.setenv("PRUNING_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("PRUNING_OVERRIDES", "finetune_steps=2,target_fraction=0.3,rank_batches=1")
    profile = get_profile("quick")
    torch.manual_seed(0)
    experiment.save_baseline(experiment.architecture(profile), pd.DataFrame(), profile)   # stands for notebook 01's
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=0",
               "-m", "pruning_lib.course.loops", "--profile", "quick"]
    done = launch(command, {**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert "(2 processes)" in done.stdout
    assert loops.NOTEBOOKS["03"] == (loops.notebook_03_runs, arms.checkpointed_run)
    assert_loops_read_back("03", profile)


# ---------------------------------------------------------------- in one process, no launch
class TwoRanks(distributed.Collective):
    """A stand-in for rank 0 of two processes whose peer holds `peer` (for the refusals)."""

    world_size = 2

    def __init__(self, peer="same"):
        self.peer = peer

    def all_gather(self, obj):
        return [obj, obj if self.peer == "same" else self.peer]


def test_evaluation_shards_cover_every_example_once():
    for n, world in ((10, 3), (2, 4), (48, 2)):
        shards = [list(distributed.EvaluationShard(n, r, world)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert [len(distributed.EvaluationShard(n, r, world)) for r in range(world)] == list(map(len, shards))


def test_an_evaluation_loader_is_never_padded():
    dataset = worker.data(5, 0)
    samplers = [DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    assert sorted(i for s in samplers for i in s) == [0, 0, 1, 2, 3, 4]       # DistributedSampler repeats example 0
    shard = distributed.sharded(DataLoader(dataset, batch_size=2, sampler=samplers[0]), TwoRanks(), train=False)
    assert isinstance(shard.sampler, distributed.EvaluationShard)              # re-made for rank 0: 0, 2, 4
    assert list(shard.sampler) == [0, 2, 4] and shard.batch_size == 2


def test_what_cannot_be_split_between_processes_is_refused():
    with pytest.raises(TypeError, match="pass a torch DataLoader"):
        distributed.sharded([(torch.zeros(1), torch.zeros(1))], TwoRanks(), train=True)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([])
    with pytest.raises(TypeError, match="IterableDataset"):
        distributed.sharded(DataLoader(Stream(), batch_size=2), TwoRanks(), train=True)
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[1\]"):
        distributed.check_same(TwoRanks(peer="other digest"), "digest", "the starting model")


def test_a_speed_target_is_refused_under_several_processes(monkeypatch):
    monkeypatch.setattr(distributed, "current", lambda: TwoRanks())
    schedule = PruningSchedule(target_speedup=2.0, fraction_per_iteration=0.1)
    train_dl = DataLoader(worker.data(16, 0), batch_size=8)
    with pytest.raises(ValueError, match="time the result in one process"):
        prune_train_repeat(worker.model(False), train_dl, train_dl, schedule, input_shape=worker.SHAPE, progress=False)


def test_one_process_is_unchanged_off_torchrun():
    assert type(distributed.current()) is distributed.Collective and distributed.current().world_size == 1
    assert distributed.join_from_environment().world_size == 1
