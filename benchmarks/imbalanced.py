"""Imbalanced data on imagenette-mini: plain training vs ``--balanced-sampler`` vs ``--class-weights auto``.

One class keeps a tenth of its training images (20 of 200; the other nine keep all), listed in a CSV in a
temporary folder (the images stay where they are). Three runs with the same seed and settings (a narrow
resnest14 at a small image size, a few epochs) differ only in the imbalance option. Each is scored on the full
validation split (50 images per class) from ``splitattn classify predict``'s printed top-1 classes, with
scikit-learn's ``recall_score`` per class: the minority class's recall is the number to watch, with the
macro-averaged recall and the accuracy beside it. When ``classify evaluate`` writes a per-class CSV (the
diagnostics of issue 19), its recall column is compared with the recomputation too.

    PYTHONPATH=. python benchmarks/imbalanced.py                       # 32 px, 6 epochs, 2 threads
    PYTHONPATH=. python benchmarks/imbalanced.py --epochs 2 --variants plain balanced   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"plain": [], "balanced": ["--balanced-sampler"], "weights": ["--class-weights", "auto"]}


def write_lists(data: Path, folder: Path, minority: str, fraction: float) -> Tuple[Path, List[Tuple[str, str]]]:
    """``folder/train.csv`` (``minority`` cut to ``fraction`` of its images, the first ones in name order) and
    ``folder/val.csv`` (the whole validation split) of absolute paths; returns the data root and the
    validation samples ``(path, class)``."""
    lists: Dict[str, List[Tuple[str, str]]] = {}
    for split in ("train", "val"):
        rows = []
        for class_dir in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            images = sorted(str(p) for p in class_dir.iterdir() if p.is_file())
            if split == "train" and class_dir.name == minority:
                images = images[: max(1, round(len(images) * fraction))]
            rows += [(path, class_dir.name) for path in images]
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([("path", "label"), *rows])
        lists[split] = rows
    if minority not in {label for _, label in lists["train"]}:
        raise SystemExit(f"{minority} is not a class of {data}/train")
    return folder, lists["val"]


def splitattn(args: Sequence[str], threads: int) -> str:
    """Run ``python -m splitattn ARGS`` and return its standard output (its error output on failure)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run([sys.executable, "-m", "splitattn", *args], env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"splitattn {' '.join(args[:2])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def predicted_top1(output: str) -> Dict[str, str]:
    """``{image path: top-1 class}`` from ``classify predict``'s printed lines (a path, then ``  p%  class``)."""
    predictions, path = {}, None
    for line in output.splitlines():
        if not line.startswith(" "):
            path = line.strip()
        elif path is not None and path not in predictions:
            predictions[path] = line.split("%", 1)[1].strip()
    return predictions


def written_recall(eval_dir: Path) -> Optional[Dict[str, float]]:
    """The recall column (%) of a per-class CSV ``classify evaluate`` wrote, by class name, if it wrote one."""
    for table in sorted(eval_dir.glob("*.csv")):
        with open(table, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows and {"name", "recall"} <= set(rows[0]):
            return {row["name"]: float(row["recall"]) for row in rows if row["recall"] not in ("", None)}
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imagenette-mini"))
    parser.add_argument("--minority", default="n03394916", help="the class cut down (default: French horn)")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.04)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="folder for the runs and results.json (default: a tmp folder)")
    args = parser.parse_args()

    from sklearn.metrics import accuracy_score, recall_score

    work = Path(args.output or tempfile.mkdtemp(prefix="imbalanced-"))
    work.mkdir(parents=True, exist_ok=True)
    root, val = write_lists(Path(args.data), work, args.minority, args.fraction)
    classes = sorted({label for _, label in val})
    results = {}
    for variant in args.variants:
        run = work / "runs" / variant
        splitattn(
            [
                "classify", "train", "--data", str(root), "--output", str(run), "--exist-ok",
                "--model", "resnest14", "--model-kwargs", "bottleneck_width=16", "stem_width=16",
                "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                "--lr", str(args.lr), "--rrc-scale", "0.35", "1", "--warmup-epochs", "1", "--seed", str(args.seed),
                "--threads", str(args.threads), "--workers", "0", "--no-progress", "--no-tensorboard",
                *VARIANTS[variant],
            ],
            args.threads,
        )  # fmt: skip
        printed = splitattn(
            ["classify", "predict", *[p for p, _ in val], "--weights", str(run / "last.pt"), "--topk", "1"],
            args.threads,
        )
        top1 = predicted_top1(printed)
        truth = [label for _, label in val]
        predicted = [top1[path] for path, _ in val]
        recall = dict(zip(classes, recall_score(truth, predicted, labels=classes, average=None, zero_division=0)))
        splitattn(["classify", "evaluate", "--weights", str(run / "last.pt"), "--output", str(run / "eval")], 1)
        written = written_recall(run / "eval")
        results[variant] = {
            "minority_recall": 100 * recall[args.minority],
            "macro_recall": 100 * sum(recall.values()) / len(recall),
            "accuracy": 100 * accuracy_score(truth, predicted),
            "recall": {name: 100 * value for name, value in recall.items()},
            "written_recall_max_abs_difference": (
                max(abs(written[name] - 100 * recall[name]) for name in written) if written else None
            ),
            "predicted_as_minority": predicted.count(args.minority),
        }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(
        f"imagenette-mini, {args.minority} cut to {args.fraction:.0%} of its training images; narrow resnest14, "
        f"{args.img_size} px, {args.epochs} epochs, lr {args.lr:g}, seed {args.seed}; scored on all {len(val)} val images "
        "(scikit-learn recall from `classify predict`)\n"
    )
    print("| run | minority recall (%) | macro recall (%) | accuracy (%) | predicted as minority | CSV vs sklearn |")
    print("|---|---:|---:|---:|---:|---|")
    for variant, r in results.items():
        check = r["written_recall_max_abs_difference"]
        print(
            f"| {variant} {' '.join(VARIANTS[variant])} | {r['minority_recall']:.1f} | {r['macro_recall']:.1f} | "
            f"{r['accuracy']:.1f} | {r['predicted_as_minority']} | "
            f"{'no CSV written' if check is None else f'max |diff| {check:.2g}'} |"
        )
    print(f"\nruns and results.json in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
