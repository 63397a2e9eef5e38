"""Elastic restarts, repeated: torchrun ``--max-restarts 1`` with one worker killed by SIGKILL after the first
checkpoint must finish by itself with exactly the weights of the uninterrupted run, every time.

Each repetition starts ``torchrun --standalone --nproc_per_node 2 --max-restarts 1 -m splitattn train ...
--resume auto`` (a tiny deterministic run on CPUs, 2 loader workers per process, see
``tests/cluster_helpers.train_args``), waits for ``last.pt``, waits a little more (0 to 2 s, varied), kills the
worker of rank 0 or 1 (alternately) and waits for the job. It counts the jobs that finished with the
uninterrupted run's weights, finished with other weights, failed, or hung (still running after ``--deadline``
seconds: their stacks are printed, by SIGABRT and Python's faulthandler, in the kept log).

    PYTHONPATH=. python benchmarks/elastic_restart.py --repetitions 10
    PYTHONPATH=. python benchmarks/elastic_restart.py --code /path/to/another/checkout   # e.g. an older commit
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster_helpers import (  # noqa: E402 (the repository's own test helpers)
    finish,
    kill_worker_after_first_checkpoint,
    same_weights,
    start,
    torchrun,
    train_args,
    weights,
)
from tests.train_helpers import make_image_folder  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose splitattn runs (default: this one)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and logs here (default: a temp dir)")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds before a job counts as hung")
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="elastic-"))
    data = make_image_folder(root / "data", per_class=8)  # 32 images: 4 steps of 2 x 4 per epoch
    reference = root / "uninterrupted"
    log = root / "uninterrupted.log"
    job = start(
        [*torchrun("--standalone", "--nproc_per_node", "2"), *train_args(data, reference)],
        log,
        args.code,
    )
    outcome = finish(job, log, time.monotonic(), 1e9)
    if outcome.returncode != 0:
        print(outcome.output)
        return 1
    expected = weights(reference)

    counts: Counter = Counter()
    for index in range(args.repetitions):
        run = root / f"restart-{index}"
        command = [
            *torchrun("--standalone", "--nproc_per_node", "2", "--max-restarts", "1"),
            *train_args(data, run),
            "--resume",
            "auto",
        ]
        delay = 2.0 * (index % 5) / 4
        outcome = kill_worker_after_first_checkpoint(
            command, run, rank=index % 2, deadline=args.deadline, code=args.code, delay=delay
        )
        if outcome.returncode is None:
            verdict = "hung"
        elif outcome.returncode != 0:
            verdict = f"failed (exit {outcome.returncode})"
        elif "resuming after" not in outcome.output:
            verdict = "no restart (killed too late)"
        else:
            verdict = "same weights" if same_weights(weights(run), expected) else "other weights"
        counts[verdict] += 1
        print(
            f"repetition {index + 1}: rank {index % 2} killed {delay:.1f} s after last.pt: {verdict} "
            f"in {outcome.seconds:.0f} s (log {run}.log)",
            flush=True,
        )
    print(
        f"{counts['same weights']}/{args.repetitions} finished with the uninterrupted run's weights; "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        + f" (runs in {root})"
    )
    return 0 if counts["same weights"] == args.repetitions else 1


if __name__ == "__main__":
    sys.exit(main())
