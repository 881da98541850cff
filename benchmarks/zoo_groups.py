"""Every classification model of torchvision: which channel groups prune exactly, and why the others are refused.

    python benchmarks/zoo_groups.py [--models resnet18 mobilenet_v2 ...]

For each model (random weights, BatchNorm statistics randomised): trace its channel groups, remove a
random eighth of the channels of every prunable group, and compare the pruned model's output with the
unpruned model whose removed channels are made zero where they are created (as tests/test_zoo.py does).
A refused group is tried too: it must raise and leave the model untouched.  Prints a Markdown table
(for the README) and writes ``build/zoo_groups.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_zoo import build, zeroed_at_producers  # noqa: E402

from pruning_lib.course.paths import REPO_ROOT  # noqa: E402
from pruning_lib.graph.groups import channel_groups  # noqa: E402
from pruning_lib.measure import machine_info  # noqa: E402
from pruning_lib.surgery import prune_filters  # noqa: E402

SIZE = {"inception_v3": 128}            # the smallest input each model accepts, when 64 is too small
SIZE.update({m: 224 for m in torchvision.models.list_models(module=torchvision.models) if m.startswith(("vit_", "maxvit"))})


def short(reason: str) -> str:
    """The kind of a refusal, for the table."""
    for words, kind in (("grouped conv", "grouped convs"), ("model's output", "reaches the output"),
                        ("couples channels", "an operation that mixes channels"), ("unknown origin", "added to a non-conv tensor"),
                        ("do not line up", "groups that do not line up"), ("nothing reads", "nothing reads it"),
                        ("shared weights", "shared module"), ("in place", "in-place op"), ("depthwise conv whose input", "depthwise behind a refusal")):
        if words in reason:
            return kind
    return reason[:60]


def check(name: str) -> dict:
    start = time.perf_counter()
    model = build(name)
    built = time.perf_counter() - start
    start = time.perf_counter()
    groups = channel_groups(model)
    analysis = time.perf_counter() - start
    prunable = [g for g in groups.values() if not g.refused and g.size > 1]
    channels = sum(g.size for g in groups.values() if g.producers)
    row = {"model": name, "groups": len(groups), "prunable_groups": len(prunable),
           "prunable_channels": sum(g.size for g in prunable) / max(channels, 1), "analysis_s": analysis, "build_s": built,
           "refusals": sorted({short(g.refused) for g in groups.values() if g.refused})}
    x = torch.randn(1, 3, SIZE.get(name, 64), SIZE.get(name, 64), generator=torch.Generator().manual_seed(1))
    if prunable:
        gen = torch.Generator().manual_seed(1)
        removed = {g.name: sorted(torch.randperm(g.size, generator=gen)[: max(1, g.size // 8)].tolist()) for g in prunable}
        with torch.no_grad():
            want = zeroed_at_producers(model, groups, removed)(x)
            start = time.perf_counter()
            pruned = prune_filters(copy.deepcopy(model), removed)
            row["prune_s"] = time.perf_counter() - start
            got = pruned(x)
        row["max_rel_diff"] = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
        row["exact"] = row["max_rel_diff"] < 1e-4
        row["params_before"] = sum(p.numel() for p in model.parameters())
        row["params_after"] = sum(p.numel() for p in pruned.parameters())
    refused = [g for g in groups.values() if g.refused and g.producers]
    if refused:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            prune_filters(model, {refused[0].producers[0]: [0]})
            row["refusal_raised"] = False
        except (NotImplementedError, ValueError):
            row["refusal_raised"] = True
        row["untouched"] = all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | groups prunable | channels in them | exact | refused, because |", "|---|---|---|---|---|"]
    for r in rows:
        exact = "—" if "exact" not in r else ("yes" if r["exact"] else f"NO ({r['max_rel_diff']:.1e})")
        if "refusal_raised" in r and not (r["refusal_raised"] and r["untouched"]):
            exact += " (a refusal failed!)"
        lines.append(f"| {r['model']} | {r['prunable_groups']} / {r['groups']} | {100 * r['prunable_channels']:.0f}% | {exact} | "
                     f"{', '.join(r['refusals']) or '—'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=torchvision.models.list_models(module=torchvision.models))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)        # one core: the other may be busy; nothing here is a speed target
    rows = []
    for name in args.models:
        try:
            rows.append(check(name))
        except Exception as err:            # noqa: BLE001 - the table records what happened to every model
            rows.append({"model": name, "groups": 0, "prunable_groups": 0, "prunable_channels": 0,
                         "refusals": [f"{type(err).__name__}: {str(err)[:80]}"]})
        print(f"{name}: {rows[-1].get('prunable_groups')} prunable, exact={rows[-1].get('exact')}", file=sys.stderr, flush=True)
    print(table(rows))
    out = REPO_ROOT / "build" / "zoo_groups.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), "torchvision": torchvision.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
