"""ResNeSt-14 against the ResNet-D-14 baseline on imagenette-mini, same settings and budget.

Trains both models one after the other (never concurrently: they share the CPU cores)
with ``splitattn train`` and prints a Markdown table of validation top-1/top-5, training
images/s and wall time, read from each run's ``metrics.json``.

    PYTHONPATH=. python benchmarks/imagenette.py            # 64 px, 2 epochs each (defaults)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imagenette-mini"))
    parser.add_argument("--output", default=str(REPO / "runs" / "bench-imagenette"))
    parser.add_argument("--models", nargs="+", default=["resnest14", "resnet14d"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.04)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for model in args.models:
        run = Path(args.output) / model
        command = [
            sys.executable,
            "-m",
            "splitattn",
            "train",
            "--data",
            args.data,
            "--model",
            model,
            "--output",
            str(run),
            "--img-size",
            str(args.img_size),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--lr",
            str(args.lr),
            "--warmup-epochs",
            "0.3",
            "--label-smoothing",
            "0.1",
            "--rrc-scale",
            "0.25",
            "1",
            "--workers",
            str(args.workers),
            "--seed",
            "0",
            "--no-progress",
        ]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=REPO, env=env, check=True)
        metrics = json.loads((run / "metrics.json").read_text())
        rows.append((model, metrics))

    print(f"\nimagenette-mini, {args.img_size}px, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}")
    print("| model | val top-1 (%) | val top-5 (%) | train images/s | wall time (s) |")
    print("|---|---|---|---|---|")
    for model, m in rows:
        print(
            f"| {model} | {m['top1']:.1f} | {m['top5']:.1f} | {m['train_images_per_sec']:.1f} | {m['wall_time_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
