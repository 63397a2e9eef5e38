"""Shared pieces of the training tests: a tiny image folder and the command that trains on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

from .conftest import REPO_ROOT as REPO  # noqa: F401 (re-exported for the training tests)

# A narrow resnest14 at 32 px: the real architecture, small enough for 2 CPU cores.
TINY_MODEL = ["--model", "resnest14", "--model-kwargs", "bottleneck_width=16", "stem_width=16", "--img-size", "32"]


def make_image_folder(
    root: Path,
    classes: Sequence[str] = ("a", "b", "c", "d"),
    per_class: int = 8,
    splits: Sequence[str] = ("train", "val"),
    size: int = 36,
    seed: int = 0,
) -> Path:
    """ImageFolder tree of PNGs whose mean colour depends on the class (learnable, reproducible)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.zeros((size, size, 3)) + 255.0 * index / max(1, len(classes) - 1)
                pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def child_env(threads: int = 1) -> Dict[str, str]:
    """Environment for CLI subprocesses: import this checkout, few threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def cli(args: List[str], threads: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m splitattn ARGS`` in a subprocess and return its completed process."""
    result = subprocess.run(
        [sys.executable, "-m", "splitattn", *args], cwd=REPO, env=child_env(threads), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"splitattn {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def independent_classifier(checkpoint_path: Path):
    """``(model in eval mode, transform, class names)`` of a ``classify train`` checkpoint, rebuilt without our
    data code: torchvision's Resize(floor(size / crop_pct), bilinear) + CenterCrop + ImageNet normalisation
    (timm's evaluation recipe) and the model from the checkpoint's own options."""
    import math

    import torch
    from torchvision import transforms as T

    from splitattn import create_model
    from splitattn.config import ClassifyConfig
    from splitattn.tasks.classification.checkpoint import model_overrides

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    options, classes = ClassifyConfig(**checkpoint["args"]), checkpoint["classes"]
    size = int(options.eval_img_size or options.img_size)
    transform = T.Compose(
        [
            T.Resize(math.floor(size / options.crop_pct)),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    model = create_model(checkpoint["model_name"], num_classes=len(classes), **model_overrides(options))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), transform, classes


def independent_top1(run: Path, split_dir: Path) -> float:
    """Top-1 (%) of ``run/last.pt`` on the ImageFolder ``split_dir``, recomputed without our data code
    (``independent_classifier``), one image at a time, PIL reading. An unreadable file counts as a wrong answer
    (never left out of the score)."""
    import torch

    model, transform, classes = independent_classifier(run / "last.pt")
    hits = seen = 0
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            try:
                with Image.open(path) as image:
                    pixels = transform(image.convert("RGB"))
            except OSError:
                seen += 1
                continue
            with torch.no_grad():
                hits += int(model(pixels[None]).argmax(1).item() == label)
            seen += 1
    return 100.0 * hits / seen
