"""A smoke run of the full profile: all five notebooks with ``profile="full"``, on CPU, small.

The data is a Kaggle-layout folder made here (a few dozen JPEGs of different sizes, a grayscale one, a PNG
named .jpg, a truncated file); the "ImageNet" weights are randomly initialised torchvision VGG16 and ResNet-18 saved to
files (``PRUNING_VGG16_WEIGHTS``, ``PRUNING_RESNET18_WEIGHTS``); overrides make the run small (64×64 inputs, a few steps, one iteration of
512 filters, an oracle on a sample of filters).  It checks that every notebook finishes and writes its
reports, and that the pruned VGG16 the notebooks saved is exact against its masked version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from pruning_lib.course.paths import REPO_ROOT

pytestmark = pytest.mark.slow

OVERRIDES = ",".join([
    "input_size=64", "batch_size=4", "eval_batch=16", "baseline_head_steps=2", "baseline_max_steps=2", "eval_every=1",
    "patience=1", "finetune_steps=2", "filters_per_iteration=512", "target_fraction=0.12", "final_max_steps=2",
    "rank_batches=1", "oracle_batches=1", "oracle_sample=3", "benchmark_batch=2", "threads=1",
])
BUDGET_S = 8 * 60


def kaggle_folder(root):
    """24 cats and 24 dogs: cats reddish, dogs bluish, with shapes; odd sizes and modes; one broken file."""
    rng = np.random.default_rng(0)
    train = root / "train"
    train.mkdir(parents=True)
    for animal, channel in (("cat", 0), ("dog", 2)):
        for i in range(24):
            h, w = int(rng.integers(40, 160)), int(rng.integers(30, 200))
            img = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
            img[..., channel] = np.clip(img[..., channel].astype(int) + 110, 0, 255)
            y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            img[y:y + h // 3, x:x + w // 3] = 255 - img[y:y + h // 3, x:x + w // 3]
            picture = Image.fromarray(img)
            if i == 0:
                picture = picture.convert("L")                                  # a grayscale photo
            if i == 1:
                picture.save(train / f"{animal}.{i}.jpg", format="PNG")          # a PNG named .jpg
                continue
            picture.save(train / f"{animal}.{i}.jpg", quality=90)
    broken = train / "dog.99.jpg"
    Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:300])                                  # truncated
    return root


def test_all_notebooks_run_with_the_full_profile(tmp_path):
    torch.manual_seed(0)
    weights, resnet_weights = tmp_path / "vgg16-random.pth", tmp_path / "resnet18-random.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), weights)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet_weights)
    env = {**os.environ, "PRUNING_PROFILE": "full", "PRUNING_KAGGLE_DIR": str(kaggle_folder(tmp_path / "kaggle")),
           "PRUNING_VGG16_WEIGHTS": str(weights), "PRUNING_RESNET18_WEIGHTS": str(resnet_weights),
           "PRUNING_OVERRIDES": OVERRIDES,
           "PRUNING_CHECKPOINT_DIR": str(tmp_path / "checkpoints"), "PRUNING_REPORTS_DIR": str(tmp_path / "reports"),
           "PRUNING_BUILD_DIR": str(tmp_path / "build")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pruning_lib.course.demo", "--profile", "full"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=2 * BUDGET_S)
    seconds = time.perf_counter() - start
    print(proc.stdout[-3000:])   # shown by `make test-full` (pytest -rP): the five notebooks, profile 'full'
    assert proc.returncode == 0, proc.stderr[-4000:]
    for nb in ("01_fine_tuning", "02_ranking_criteria", "03_iterative_pruning", "04_speed_and_size", "05_pruning_resnets"):
        assert f"running {nb}.ipynb (full profile)" in proc.stdout
        assert (tmp_path / "build" / f"{nb}.ipynb").is_file()
    reports = {p.name for p in (tmp_path / "reports").glob("*.json")}
    assert reports == {"ranking.json", "iterative.json", "summary.json", "lessons.json", "resnet.json"}
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["profile"] == "full" and summary["model"] == "vgg16"
    outputs = {nb: notebook_text(tmp_path / "build" / f"{nb}.ipynb") for nb in ("02_ranking_criteria", "03_iterative_pruning")}
    assert outputs["02_ranking_criteria"].count("pruned output equals masked output: True") == 2      # surgery on VGG16
    assert "pruned copy's output equals the masked forward: True" in outputs["02_ranking_criteria"]
    assert "taylor: reloaded for notebook 04 with the same widths and outputs: True" in outputs["03_iterative_pruning"]
    resnet = json.loads((tmp_path / "reports" / "resnet.json").read_text())
    assert resnet["profile"] == "full" and resnet["model"] == "resnet18" and resnet["groups"]["count"] == 12
    assert "pruned output equals masked output: True" in notebook_text(tmp_path / "build" / "05_pruning_resnets.ipynb")
    # the budget (BUDGET_S) is a speed target, measured by `make test-full` and reported, not asserted here
    print(f"full-profile smoke run: {seconds:.0f} s (budget {BUDGET_S} s; one torch thread)")


def notebook_text(path) -> str:
    """Every text output (stream and plain text) of an executed notebook, joined."""
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)
