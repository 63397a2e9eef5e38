"""Time splitattn's model against timm's in the same process: a thin wrapper over ``splitattn benchmark``.

    python benchmarks/bench_vs_timm.py [--model resnest50] [--rounds 7] [any other `splitattn benchmark` option]

Eager CPU inference at batch 1 and 16 and one training step at batch 16, 224x224, rounds interleaved,
medians and ratios; the timing code lives in ``splitattn/deploy/benchmark.py``.
"""

from __future__ import annotations

import sys

from splitattn.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "--compare", "timm", "--mode", "infer,train", "--rounds", "7", *sys.argv[1:]]))
