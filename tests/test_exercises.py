"""The checked exercises: every checker accepts the teacher's solution (notebooks/solutions/solutions.py), rejects
typical wrong answers with a message that says what differs, and rejects a function that only calls pruning_lib
(naming the call); notebook 03's ten-line loop, adapted to the exercise, passes; `exercises.summary` collects the
verdicts."""

from __future__ import annotations

import copy
import itertools
import json
import statistics
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning_lib import exercises, surgery
from pruning_lib.course import lessons
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.course.profiles import QUICK
from pruning_lib.graph.groups import channel_groups, group_widths
from pruning_lib.measure.counting import count_flops, count_parameters
from pruning_lib.measure.deploy import fold_batchnorm
from pruning_lib.measure.latency import measure_latency
from pruning_lib.plan import flops_per_channel, layer_floors, plan_from_scores, regularised_scores
from pruning_lib.rank import criteria
from pruning_lib.rank.criteria import rank_filters
from pruning_lib.rank.oracle import spearman
from pruning_lib.recover import train
from pruning_lib.recover.evaluation import evaluate
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat

sys.path.insert(0, str(REPO_ROOT / "notebooks" / "solutions"))
import solutions  # noqa: E402

RIGHT = [
    (exercises.check_conv_cost, solutions.conv_cost), (exercises.check_standard_error, solutions.standard_error),
    (exercises.check_l1, solutions.l1_norms), (exercises.check_taylor, solutions.taylor_scores),
    (exercises.check_spearman, solutions.rank_correlation), (exercises.check_remove_filter, solutions.remove_filter),
    (exercises.check_remove_last_filter, solutions.remove_last_filter),
    (exercises.check_prune_train_repeat, solutions.prune_train_repeat_by_hand),
    (exercises.check_latency, solutions.latency_ms), (exercises.check_fold_batchnorm, solutions.fold),
    (exercises.check_channel_groups, solutions.groups_of), (exercises.check_group_readers, solutions.readers_of),
]


@pytest.mark.parametrize("checker, solution", RIGHT, ids=[c.__name__ for c, _ in RIGHT])
def test_every_checker_accepts_the_solution(checker, solution, capsys):
    assert checker(solution) is True
    out = capsys.readouterr().out
    assert out.startswith("✓") and "passed" in out and out.count("\n") == 1


def test_an_untouched_starter_is_not_done_yet(capsys):
    def starter(*args, **kwargs):
        raise NotImplementedError
    assert exercises.check_l1(starter) is False
    assert "not done yet" in capsys.readouterr().out


def test_an_error_in_the_students_code_is_shown_not_raised(capsys):
    assert exercises.check_spearman(lambda a, b: 1 / 0) is False
    assert "your function raised ZeroDivisionError" in capsys.readouterr().out


def rejected(checker, answer, capsys, *fragments):
    assert checker(answer) is False
    out = capsys.readouterr().out
    assert out.startswith("✗"), out
    for fragment in fragments:
        assert fragment in out, out
    return out


# --------------------------------------------------------------------------- wrong answers, with their hints


def test_conv_cost_wrong_answers(capsys):
    def no_bias(conv, h, w):
        params, flops = solutions.conv_cost(conv, h, w)
        return params - (conv.out_channels if conv.bias is not None else 0), flops

    def macs(conv, h, w):
        params, flops = solutions.conv_cost(conv, h, w)
        return params, flops // 2

    rejected(exercises.check_conv_cost, no_bias, capsys, "parameters, expected", "the bias")
    rejected(exercises.check_conv_cost, macs, capsys, "FLOPs, expected", "2 per multiply-add")


def test_standard_error_wrong_answers(capsys):
    rejected(exercises.check_standard_error, lambda c: solutions.standard_error(c) / 100, capsys, "multiply by 100")
    rejected(exercises.check_standard_error, lambda c: 100 * float(c.float().mean() * (1 - c.float().mean())) ** 0.5,
             capsys, "divide the variance by n")


def test_l1_wrong_answers(capsys):
    rejected(exercises.check_l1, lambda conv: conv.weight.detach().abs().mean(dim=(1, 2, 3)), capsys, "mean of |w|")
    rejected(exercises.check_l1, lambda conv: conv.weight.detach().flatten(1).norm(dim=1), capsys, "L2 norm")
    rejected(exercises.check_l1, lambda conv: conv.weight.detach().abs().sum(), capsys, "one per filter")


def _taylor_with(abs_after_average: bool, conv_output: bool, mean_loss: bool = False):
    def scores(model, batches):
        relus = {}
        names = list(dict(model.named_modules()))
        modules = dict(model.named_modules())
        for c in (n for n, m in modules.items() if isinstance(m, nn.Conv2d)):
            relus[c] = modules[next(n for n in names[names.index(c):] if isinstance(modules[n], nn.ReLU))]
        reference = copy.deepcopy(model)
        for m in reference.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        ref_modules = dict(reference.named_modules())
        totals, count = {c: 0 for c in relus}, 0
        for x, y in batches:
            maps = {}
            hooks = [(ref_modules[c] if conv_output else ref_modules[_name(model, r)]).register_forward_hook(
                lambda m, i, o, c=c: maps.__setitem__(c, o)) for c, r in relus.items()]
            loss = F.cross_entropy(reference(x), y, reduction="mean" if mean_loss else "sum")
            for h in hooks:
                h.remove()
            grads = torch.autograd.grad(loss, [maps[c] for c in relus])
            for c, g in zip(relus, grads):
                per_example = (g * maps[c]).mean((2, 3))
                totals[c] = totals[c] + (per_example.sum(0) if abs_after_average else per_example.abs().sum(0))
            count += len(y)
        return {c: (t / count).abs().detach() for c, t in totals.items()}
    return scores


def _name(model, module):
    return next(n for n, m in model.named_modules() if m is module)


def test_taylor_wrong_answers(capsys):
    assert exercises.check_taylor(_taylor_with(False, False)) is True          # the test's own hooks agree
    capsys.readouterr()
    rejected(exercises.check_taylor, _taylor_with(True, False), capsys, "|·| per example, then average")
    rejected(exercises.check_taylor, _taylor_with(False, True), capsys, "before the BatchNorm", "hook the ReLU's output")
    rejected(exercises.check_taylor, _taylor_with(False, False, mean_loss=True), capsys, "the batch's mean loss",
             "reduction='sum'")


def test_spearman_wrong_answers(capsys):
    pearson = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731

    def no_ties(a, b):
        return pearson(a.argsort().argsort().double(), b.argsort().argsort().double())

    rejected(exercises.check_spearman, pearson, capsys, "Pearson's r of the values")
    rejected(exercises.check_spearman, no_ties, capsys, "with ties", "average of their ranks")


def test_remove_filter_wrong_answers(capsys):
    def conv_only(model, conv_name, k):
        conv = model.get_submodule(conv_name)
        keep = torch.tensor([i for i in range(conv.out_channels) if i != k])
        conv.weight, conv.bias = nn.Parameter(conv.weight[keep].detach()), nn.Parameter(conv.bias[keep].detach())
        conv.out_channels -= 1
        return model

    def without_statistics(model, conv_name, k):
        model = solutions.remove_filter(model, conv_name, k)
        bn = model.get_submodule(str(int(conv_name) + 1))
        bn.running_mean = torch.zeros(bn.num_features + 1)                     # forgot to slice the statistics
        return model

    rejected(exercises.check_remove_filter, conv_only, capsys, "BatchNorm")
    rejected(exercises.check_remove_filter, without_statistics, capsys, "running_mean", "slice all four")


def test_remove_last_filter_wrong_answers(capsys):
    def position_major(model, k):
        conv, bn, linear = model[4], model[5], model[9]
        keep = [i for i in range(conv.out_channels) if i != k]
        conv.weight, conv.bias = nn.Parameter(conv.weight[keep].detach()), nn.Parameter(conv.bias[keep].detach())
        for attr in ("weight", "bias"):
            setattr(bn, attr, nn.Parameter(getattr(bn, attr)[keep].detach()))
        bn.running_mean, bn.running_var = bn.running_mean[keep], bn.running_var[keep]
        span = linear.in_features // conv.out_channels
        columns = [p * conv.out_channels + c for p in range(span) for c in keep]     # every C-th column: wrong
        linear.weight = nn.Parameter(linear.weight[:, columns].detach())
        conv.out_channels, bn.num_features, linear.in_features = len(keep), len(keep), len(columns)
        return model

    rejected(exercises.check_remove_last_filter, position_major, capsys, "channel-major", "not every C-th column")
    rejected(exercises.check_remove_last_filter, _conv_and_bn_only, capsys, "9.weight has shape (3, 20)")


def _conv_and_bn_only(model, k):
    conv, bn = model[4], model[5]
    keep = [i for i in range(conv.out_channels) if i != k]
    conv.weight, conv.bias = nn.Parameter(conv.weight[keep].detach()), nn.Parameter(conv.bias[keep].detach())
    for attr in ("weight", "bias"):
        setattr(bn, attr, nn.Parameter(getattr(bn, attr)[keep].detach()))
    bn.running_mean, bn.running_var = bn.running_mean[keep], bn.running_var[keep]
    conv.out_channels = bn.num_features = len(keep)
    return model


def ten_line_loop(*, rank_once=False, fine_tune=True, lr_schedule="constant", normalize="l2", notebook_settings=False):
    """Notebook 03's ten lines (section 1), adapted to the exercise's signature; each option makes a typical mistake."""
    p = QUICK

    def loop(model, train_batches, val_batches, *, iterations, filters_per_iteration, finetune_steps, lr):
        original = copy.deepcopy(model)
        rank_batches = list(itertools.islice(train_batches, 2))
        cap = p.max_fraction if notebook_settings else None
        floors = layer_floors(group_widths(model), min_keep=1, max_fraction=cap)
        history, first_scores = [], None
        for iteration in range(1, iterations + 1):
            k = (round(p.fraction_per_iteration * sum(group_widths(model).values())) if notebook_settings
                 else filters_per_iteration)
            scores = first_scores or criteria.rank_filters(model, rank_batches, "taylor", normalize=normalize)
            if rank_once:                                   # stale: the first ranking, applied to the original model
                first_scores, k = scores, iteration * filters_per_iteration
                model = copy.deepcopy(original)
            if notebook_settings:
                scores = regularised_scores(scores, flops_per_channel(model, (1, 8, 8)), p.flops_lambda)
            plan = plan_from_scores(scores, k, min_keep=floors, multiple_of=p.multiple_of if notebook_settings else 1)
            surgery.prune_filters(model, plan)
            before = evaluate(model, val_batches)["accuracy"]
            if fine_tune:
                train.fit(model, train_batches, steps=finetune_steps, lr=lr, lr_schedule=lr_schedule, progress=False)
            after = evaluate(model, val_batches)["accuracy"]
            history.append({"widths": group_widths(model), "accuracy_before_finetune": before,
                            "accuracy_after_finetune": after})
        return model, history
    return loop


def test_the_ten_line_loop_of_notebook_03_passes(capsys):
    assert exercises.check_prune_train_repeat(ten_line_loop()) is True
    assert capsys.readouterr().out.startswith("✓")


def test_the_ten_line_loop_is_the_notebooks():
    """The loop above is notebook 03's section 1 with the profile's settings replaced: the same library calls."""
    cell = next(c for c in _cells("03_iterative_pruning") if "for iteration in (1, 2):" in c)
    for call in ('criteria.rank_filters(model, rank_batches, "taylor")', "regularised_scores(", "plan_from_scores(",
                 "surgery.prune_filters(model, plan)", 'evaluate(model, val_batches)["accuracy"]', "train.fit(model,"):
        assert call in cell, call


def test_prune_train_repeat_wrong_answers(capsys):
    def widths_only(*args, **kwargs):
        model, history = solutions.prune_train_repeat_by_hand(*args, **kwargs)
        return model, [row["widths"] for row in history]

    rejected(exercises.check_prune_train_repeat, ten_line_loop(rank_once=True), capsys, "iteration 2", "ranked once",
             "rank the current, already pruned model again")
    rejected(exercises.check_prune_train_repeat, ten_line_loop(fine_tune=False), capsys, "fine-tune after each prune")
    rejected(exercises.check_prune_train_repeat, ten_line_loop(lr_schedule="cosine"), capsys, "cosine learning rate")
    rejected(exercises.check_prune_train_repeat, ten_line_loop(normalize=None), capsys, "widths",
             "normalised per layer")
    rejected(exercises.check_prune_train_repeat, ten_line_loop(notebook_settings=True), capsys, "iteration 1",
             "notebook 03's settings")
    rejected(exercises.check_prune_train_repeat, widths_only, capsys, "give each iteration a dict")


def _timed(model, x, *, warmup: int, repeats: int, clock=time.perf_counter) -> list[float]:
    """`repeats` timings of ``model(x)`` in ms, after `warmup` untimed calls."""
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = clock()
        model(x)
        times.append(1e3 * (clock() - start))
    return times


def test_latency_accepts_other_right_answers(capsys):
    """No fixed clock threshold: any median of warm timings passes, with any reasonable protocol."""
    assert exercises.check_latency(lambda m, x: statistics.median(_timed(m, x, warmup=1, repeats=5)))
    assert exercises.check_latency(lambda m, x: statistics.median(_timed(m, x, warmup=5, repeats=25)))
    assert exercises.check_latency(lambda m, x: statistics.median(_timed(m, x, warmup=2, repeats=9, clock=time.time)))
    capsys.readouterr()


def test_latency_wrong_answers(capsys):
    def one_call(model, x):
        return _timed(model, x, warmup=0, repeats=1)[0]

    def mean_of_repeats(model, x):
        return statistics.mean(_timed(model, x, warmup=1, repeats=12))

    def made_up(model, x):                              # runs the model, then returns a plausible constant
        _timed(model, x, warmup=3, repeats=15)
        return 4.0

    def wrong_thing(model, x):                          # runs the model, but times copying the input
        _timed(model, x, warmup=3, repeats=5)
        return statistics.median(_timed(lambda _: x.clone(), x, warmup=3, repeats=15))

    def cpu_time(model, x):                             # process time: a sleeping model costs no CPU
        return statistics.median(_timed(model, x, warmup=3, repeats=15, clock=time.process_time))

    def cold_call(model, x):                            # runs it enough, but reports the cold first call
        first = _timed(model, x, warmup=0, repeats=1)[0]
        _timed(model, x, warmup=0, repeats=5)
        return first

    rejected(exercises.check_latency, one_call, capsys, "warm it up")
    rejected(exercises.check_latency, mean_of_repeats, capsys, "median")
    rejected(exercises.check_latency, lambda m, x: solutions.latency_ms(m, x) / 1e3, capsys, "return milliseconds")
    rejected(exercises.check_latency, made_up, capsys, "less than each call sleeps (12 ms)")
    rejected(exercises.check_latency, wrong_thing, capsys, "less than each call sleeps", "forward pass itself")
    rejected(exercises.check_latency, cpu_time, capsys, "less than each call sleeps", "forward pass itself")
    rejected(exercises.check_latency, cold_call, capsys, "warm-up")


def test_fold_batchnorm_wrong_answers(capsys):
    def no_eps(conv, bn):
        bn.eps = 0.0
        return solutions.fold(conv, bn)

    def drops_conv_bias(conv, bn):
        conv.bias = None
        return solutions.fold(conv, bn)

    rejected(exercises.check_fold_batchnorm, no_eps, capsys, "outputs differ", "eps")
    rejected(exercises.check_fold_batchnorm, drops_conv_bias, capsys, "bias=True", "goes through the BatchNorm")


def test_channel_groups_wrong_answers(capsys):
    def without_shortcuts(model):
        return [{c for c in group if "shortcut" not in c} for group in solutions.groups_of(model)]

    def each_conv_alone(model):
        return [{n} for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]

    rejected(exercises.check_channel_groups, without_shortcuts, capsys, "shortcut conv writes into the same sum")
    rejected(exercises.check_channel_groups, each_conv_alone, capsys, "stem writes the first stage's stream")


def test_group_readers_wrong_answers(capsys):
    def without(fragment):
        return lambda model: {k: {r for r in v if fragment not in r} for k, v in solutions.readers_of(model).items()}

    rejected(exercises.check_group_readers, without("classifier"), capsys, "the Linear reads the last stream")
    rejected(exercises.check_group_readers, without("shortcut"), capsys, "next stage's shortcut reads the stream")


def _cells(notebook: str) -> list[str]:
    """The source of every cell of notebooks/<notebook>.ipynb."""
    cells = json.loads((REPO_ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    return ["".join(c["source"]) for c in cells]


# --------------------------------------------------------------------------- the no-library rule


def _library_loop(model, train_batches, val_batches, *, iterations, filters_per_iteration, finetune_steps, lr):
    schedule = PruningSchedule(filters_per_iteration=filters_per_iteration, finetune_steps=finetune_steps, lr=lr,
                               rank_batches=2, target_fraction=iterations * filters_per_iteration / 19)
    pruned, history = prune_train_repeat(model, train_batches, val_batches, schedule, input_shape=(1, 8, 8),
                                         progress=False)
    return pruned, [{"widths": {c[8:]: int(r[c]) for c in history.columns if c.startswith("filters:")},
                     "accuracy_before_finetune": r["accuracy_before_finetune"],
                     "accuracy_after_finetune": r["accuracy_after_finetune"]} for _, r in history.iloc[1:].iterrows()]


def _remove_last(model, k):
    surgery.prune_filters(model, {"4": [k]})
    return model


#: (checker, a "solution" that only calls pruning_lib, the library function its verdict must name)
LIBRARY_ONLY = [
    (exercises.check_conv_cost,
     lambda conv, h, w: (count_parameters(conv), count_flops(conv, (1, conv.in_channels, h, w))),
     "pruning_lib.measure.counting.count_parameters"),
    (exercises.check_standard_error, lambda c: lessons.noise_points(c, torch.zeros_like(c)) / 2,
     "pruning_lib.course.lessons.noise_points"),
    (exercises.check_l1, lambda conv: rank_filters(nn.Sequential(conv, nn.ReLU(), nn.Conv2d(conv.out_channels, 2, 1)),
                                                   None, "l1", normalize=None)["0"],
     "pruning_lib.rank.criteria.rank_filters"),
    (exercises.check_taylor, lambda model, batches: criteria.rank_filters(model, batches, "taylor", normalize=None),
     "pruning_lib.rank.criteria.rank_filters"),
    (exercises.check_spearman, spearman, "pruning_lib.rank.oracle.spearman"),
    (exercises.check_remove_filter, lambda model, conv, k: surgery.prune_filters(model, {conv: [k]}) or model,
     "pruning_lib.surgery.prune_filters"),
    (exercises.check_remove_last_filter, _remove_last, "pruning_lib.surgery.prune_filters"),
    (exercises.check_prune_train_repeat, _library_loop, "pruning_lib.recover.schedule.PruningSchedule"),
    (exercises.check_latency, lambda m, x: measure_latency(m, tuple(x.shape), min_run_time=0.05)["median_ms"],
     "pruning_lib.measure.latency.measure_latency"),
    (exercises.check_fold_batchnorm, lambda conv, bn: fold_batchnorm(nn.Sequential(conv, bn))[0],
     "pruning_lib.measure.deploy.fold_batchnorm"),
    (exercises.check_channel_groups,
     lambda model: [set(g.producers) for g in channel_groups(model).values() if not g.refused],
     "pruning_lib.graph.groups.channel_groups"),
    (exercises.check_group_readers,
     lambda model: {frozenset(g.producers): set(g.readers) for g in channel_groups(model).values()},
     "pruning_lib.graph.groups.channel_groups"),
]


@pytest.mark.parametrize("checker, library_only, called", LIBRARY_ONLY, ids=[c.__name__ for c, _, _ in LIBRARY_ONLY])
def test_every_checker_rejects_a_solution_that_only_calls_the_library(checker, library_only, called, capsys):
    out = rejected(checker, library_only, capsys, f"your function calls {called}", "yourself")
    assert out.count("\n") == 1
    assert ("write the loop yourself" in out) == (checker is exercises.check_prune_train_repeat)


def test_the_loop_may_not_call_the_library_loop_even_with_its_own_schedule(capsys):
    def delegates(model, train_batches, val_batches, **kwargs):   # the schedule built outside the student's call
        return _library_loop(model, train_batches, val_batches, **kwargs)
    schedule = PruningSchedule(target_fraction=0.2, filters_per_iteration=4, finetune_steps=1, rank_batches=1)

    def hands_over(model, train_batches, val_batches, **kwargs):
        return prune_train_repeat(model, train_batches, val_batches, schedule, input_shape=(1, 8, 8), progress=False)

    rejected(exercises.check_prune_train_repeat, delegates, capsys, "pruning_lib.recover.schedule.PruningSchedule")
    rejected(exercises.check_prune_train_repeat, hands_over, capsys,
             "your function calls pruning_lib.recover.iterative.prune_train_repeat", "only its pieces")


def test_the_library_call_is_named_even_when_the_student_catches_it(capsys):
    def swallows(model):
        try:
            return channel_groups(model)
        except Exception:
            return solutions.groups_of(model)
    rejected(exercises.check_channel_groups, swallows, capsys, "pruning_lib.graph.groups.channel_groups")


def test_the_library_call_is_named_even_when_it_fails(capsys):
    def wrong_arguments(model):
        return channel_groups(model, graph="not a graph")
    rejected(exercises.check_channel_groups, wrong_arguments, capsys, "pruning_lib.graph.groups.channel_groups")


def test_the_previous_profiler_is_restored(capsys):
    def profiler(frame, event, arg):
        return None
    sys.setprofile(profiler)
    try:
        exercises.check_l1(solutions.l1_norms)
        assert sys.getprofile() is profiler
        exercises.check_l1(lambda conv: 1 / 0)
        assert sys.getprofile() is profiler
        exercises.check_l1(lambda conv: rank_filters(nn.Sequential(conv), None, "l1"))
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)
    capsys.readouterr()


def test_the_checkers_own_reference_is_not_counted(capsys):
    """The checkers call the library for their reference: only the student's call is watched."""
    assert exercises.check_taylor(solutions.taylor_scores) is True
    assert sys.getprofile() is None
    capsys.readouterr()


# --------------------------------------------------------------------------- Taylor's scaffolding, summary


def taylor_by_the_docstring(model, batches):
    """The five steps of the starter's docstring, written as a student would: retain_grad, not register_hook."""
    names, modules = [n for n, _ in model.named_modules()], dict(model.named_modules())
    relu_of = {c: next(n for n in names[names.index(c):] if isinstance(modules[n], nn.ReLU))
               for c in names if isinstance(modules[c], nn.Conv2d)}
    maps, totals, count = {}, {c: 0 for c in relu_of}, 0

    def keep(conv):
        def hook(module, inputs, output):
            output.retain_grad()
            maps[conv] = output
        return hook
    handles = [modules[r].register_forward_hook(keep(c)) for c, r in relu_of.items()]
    try:
        for x, y in batches:
            F.cross_entropy(model(x), y, reduction="sum").backward()
            for c in relu_of:
                totals[c] = totals[c] + (maps[c] * maps[c].grad).mean(dim=(2, 3)).abs().sum(0).detach()
            count += len(y)
    finally:
        for h in handles:
            h.remove()
    return {c: t / count for c, t in totals.items()}


def test_the_taylor_starters_steps_pass(capsys):
    assert exercises.check_taylor(taylor_by_the_docstring) is True
    capsys.readouterr()


def test_summary_records_each_exercises_last_verdict(capsys):
    exercises.check_l1(lambda conv: conv.weight.detach().flatten(1).norm(dim=1))          # the L2 norm: wrong
    exercises.check_spearman(solutions.rank_correlation)
    table = exercises.summary()
    assert list(table.columns) == ["notebook", "exercise", "passed"]
    rows = table.set_index("exercise")
    assert rows.loc["l1_norms", "passed"] == False and rows.loc["l1_norms", "notebook"] == "02"   # noqa: E712
    assert rows.loc["rank_correlation", "passed"] == True                                       # noqa: E712
    order = list(table["exercise"])
    exercises.check_l1(solutions.l1_norms)                                                    # now right
    again = exercises.summary()
    assert list(again["exercise"]) == order
    assert again.set_index("exercise").loc["l1_norms", "passed"] == True                       # noqa: E712
    assert capsys.readouterr().out.count("\n") == 3          # the checkers' three lines; summary prints nothing
