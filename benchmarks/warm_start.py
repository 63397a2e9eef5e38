"""What the first call of the fast path costs in a new process: cold and warm caches, and kept packages.

Each line is a fresh process (what a user's next ``evaluate --fast`` is), all sharing one new
``TORCHINDUCTOR_CACHE_DIR`` and one package folder, so the first of each kind is cold:

* ``compile``: ``optimize_for_inference(backend="compile")`` and its first call, cold, then warm (Inductor's FX
  graph cache), then with *other weights* (the cache must serve the new weights, not the old);
* ``aot``: ``backend="aot"``: the first run compiles and writes the package, the next one loads it.

Printed per line: seconds to the first output, its relative error against eager, steady ms per call. The
tests check which of these compile (counted); this script says what that costs.

    PYTHONPATH=. python benchmarks/warm_start.py --model resnest14 --img-size 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see splitattn.deploy.runners: idle threads must not spin


def child(args: argparse.Namespace) -> dict:
    import torch

    from splitattn.models import create_model
    from splitattn.optimize.inference import optimize_for_inference

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=10).eval()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    start = time.perf_counter()
    fast = optimize_for_inference(model, backend=args.backend, example_size=args.img_size, cache_dir=args.packages)
    out = fast(x)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(5):
        fast(x)
    return {
        "backend": args.backend,
        "seed": args.seed,
        "first_call_s": round(first, 1),
        "rel_err": float((out - expected).abs().max() / expected.abs().max()),
        "ms": round(1e3 * (time.perf_counter() - start) / 5, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnest14")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--packages", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        print(json.dumps(child(args)))
        return 0
    cache = tempfile.mkdtemp(prefix="inductor-cache-")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
    plan = [("compile", 0, "cold"), ("compile", 0, "warm"), ("compile", 1, "warm, other weights")]
    plan += [("aot", 0, "cold: compiles, writes the package"), ("aot", 0, "loads the package")]
    for backend, seed, label in plan:
        command = [sys.executable, __file__, "--backend", backend, "--seed", str(seed), "--packages", cache]
        command += ["--model", args.model, "--img-size", str(args.img_size), "--batch", str(args.batch)]
        command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            print(json.dumps({"backend": backend, "label": label, "failed": done.stderr[-800:]}), flush=True)
            continue
        print(json.dumps({**json.loads(done.stdout.strip().splitlines()[-1]), "label": label}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
