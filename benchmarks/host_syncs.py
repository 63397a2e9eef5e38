"""Device-to-host reads per optimizer step of ``splitattn train``, and its training throughput.

A host sync is a read of a tensor's value by Python: ``Tensor.item``, ``Tensor.tolist``, ``bool(tensor)`` and
``float(tensor)`` / ``int(tensor)``. On a GPU each one waits for every kernel queued before it. This script
patches those methods to count their calls made with autograd enabled (the training steps; evaluation runs
under ``torch.no_grad`` and is left out; the data pipeline runs in a loader worker, whose reads are its own), runs the built-in digits demo (no data needed) in this process, and
prints those reads per optimizer step (steps counted by a global optimizer hook), with the images per second
of the run's own log.

    PYTHONPATH=. python benchmarks/host_syncs.py
    PYTHONPATH=/path/to/an/older/checkout python benchmarks/host_syncs.py   # the same count for other code

The count is what the loop asks for, device-independent, so the CPU shows what a GPU would wait for.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import torch

READS = ("item", "tolist", "__bool__", "__float__", "__int__")


def count_reads(argv: list) -> tuple:
    """Run ``splitattn`` with ``argv`` in this process: ``(reads of each READS method made with autograd
    enabled, optimizer steps)``."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from splitattn.cli import main

    calls: Counter = Counter()
    steps = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(name):
        def read(self, *args, **kwargs):
            if torch.is_grad_enabled():
                calls[name] += 1
            return originals[name](self, *args, **kwargs)

        return read

    hook = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: steps.append(1))
    for name in READS:
        setattr(torch.Tensor, name, counted(name))
    try:
        assert main(argv) == 0
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
        hook.remove()
    return calls, len(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        argv = ["train", "--batch-size", str(args.batch_size), "--no-tensorboard", "--threads", str(args.threads)]
        argv += ["--workers", "1", "--no-progress", "--device", "cpu", "--output", str(run)]
        calls, steps = count_reads(argv)
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [r["train_images_per_sec"] for r in records if "train_images_per_sec" in r]
    total = sum(calls.values())
    print(f"digits demo, batch {args.batch_size}: {steps} optimizer steps, {total} host reads with autograd on")
    print("  by kind: " + (", ".join(f"{name} {count}" for name, count in sorted(calls.items())) or "none"))
    print(f"  per optimizer step: {total / max(steps, 1):.2f}")
    print(f"  training images/s per log record: {', '.join(f'{r:.0f}' for r in rates)}")


if __name__ == "__main__":
    main()
