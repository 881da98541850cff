"""benchmarks/latency_arms.py: pruning for FLOPs, for FLOPs in blocks, or for measured time, side by side."""

from __future__ import annotations


def test_the_side_by_side_benchmark_reports_each_arm_against_the_others():
    """benchmarks/latency_arms.py's tables from a made-up seed: speed ratios from one harness, paired gaps as given."""
    from conftest import benchmark_module

    arms = benchmark_module("latency_arms")
    ms = {"dense": 20.0, "flops": 5.0, "flops, step": 4.0, "latency": 4.0, "asked 3x": 6.5}
    table = [{"form": f, "batch": b, "model": m, "latency_ms": v * (2 if f == "deploy" else 1), "flops_ratio": 5.0}
             for f in ("deploy", "onnxruntime") for b in (1, 64) for m, v in ms.items()]
    gap = {"gap_points": -0.3, "noise_points": 0.8}
    result = {"model": "small_vgg", "seed": 0, "table": table, "targets": {"latency": 5.0, "asked 3x": 3.0},
              "accuracy_points": {"dense": 85.0, "flops": 84.5},
              "gaps": {"latency vs flops": gap, "latency vs flops, step": {"gap_points": -1.0, "noise_points": 0.8}},
              "finetune_steps": {a: 100 for a in arms.ARMS}, "iterations": {a: 3 for a in arms.ARMS}, "asked": None}
    speed = arms.speed_ratios(result)
    assert len(speed) == 4 and (speed["latency / flops"] == 1.25).all() and (speed["speedup latency"] == 5.0).all()
    text = arms.report([result])
    assert "| small_vgg | 0.8 | 0 | 85.0 | 84.5 | -0.3 ± 0.8 | -1.0 ± 0.8 | 100/100/100 | 3/3/3 | 5.0 |" in text
    verdict = arms.verdicts([result]).iloc[0]
    assert verdict["(c)/(a) deploy, 64"] == 1.25 and verdict["vs (a)"] == "met"         # 1.25x, -0.3 within ±0.8
    assert verdict["(c)/(b) ORT, 64"] == 1.0 and verdict["vs (b)"] == "missed"
