"""The checked exercises: every checker accepts the teacher's solution (notebooks/solutions/solutions.py) and
rejects typical wrong answers with a message that says what differs."""

from __future__ import annotations

import copy
import itertools
import statistics
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning_lib import exercises, surgery
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.graph.groups import group_widths
from pruning_lib.plan import plan_from_scores
from pruning_lib.rank.criteria import rank_filters

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


def test_prune_train_repeat_wrong_answers(capsys):
    def ranks_once(model, train_batches, val_batches, *, iterations, filters_per_iteration, finetune_steps, lr):
        scores = rank_filters(model, list(itertools.islice(train_batches, 2)), "taylor")
        plan = plan_from_scores(scores, iterations * filters_per_iteration, min_keep=1)
        surgery.prune_filters(model, plan)
        widths = group_widths(model)
        return model, [widths] * iterations

    def never_fine_tunes(model, train_batches, val_batches, *, iterations, filters_per_iteration, finetune_steps, lr):
        return solutions.prune_train_repeat_by_hand(model, train_batches, val_batches, iterations=iterations,
                                                    filters_per_iteration=filters_per_iteration, finetune_steps=0, lr=lr)

    rejected(exercises.check_prune_train_repeat, ranks_once, capsys, "iteration 1", "rank the current")
    rejected(exercises.check_prune_train_repeat, never_fine_tunes, capsys, "fine-tune after each prune")


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
