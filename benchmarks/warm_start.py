"""What a second run pays for the compiled fast path: cold vs warm Inductor caches, and AOTInductor packages.

Each measurement runs in a fresh process (what a user's second ``evaluate --fast`` is), all sharing one new
``TORCHINDUCTOR_CACHE_DIR`` so the first is cold and the later ones find the FX graph cache (on by default in
torch 2.14, frozen parameters included: the cache key holds their metadata, not their values) and the
autotuning caches:

* ``compile``: ``optimize_for_inference(model)`` and its first call (cold), then the same in a new process
  (warm), then a model with *other weights* in a new process (does the cache serve the new weights?).
* ``aoti``: ``torch.export`` + ``torch._inductor.aoti_compile_and_package`` (dynamic batch) written to a
  ``.pt2`` file, then in a new process ``torch._inductor.aoti_load_package`` and the first call; the loaded
  package's outputs against eager, and its steady-state latency against the compiled fast path's.

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
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_int8.py


def child(args: argparse.Namespace) -> dict:
    import torch

    from splitattn.models import create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=10).eval()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    result = {"step": args.step, "seed": args.seed}

    def rel(out):
        return float((out - expected).abs().max() / expected.abs().max())

    def latency(fn, repeats=5):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return 1e3 * (time.perf_counter() - start) / repeats

    start = time.perf_counter()
    if args.step == "compile":
        from splitattn.deploy.optimize import optimize_for_inference

        torch._inductor.config.freezing = True  # guard parameters: the stale-weights fix
        fast = optimize_for_inference(model, "fp32")
        out = fast(x)
        result["first_call_s"] = time.perf_counter() - start
        result["rel_err"] = rel(out)
        result["ms"] = latency(lambda: fast(x))
    elif args.step == "aoti-compile":
        from torch.export import Dim

        from splitattn.deploy.optimize import fold_batch_norm

        folded = fold_batch_norm(model).to(memory_format=torch.channels_last)
        shapes = ({0: Dim("batch", min=1, max=64)},)
        example = torch.cat([x, x])[:2].to(memory_format=torch.channels_last)  # batch 2: export specialises a 1
        with torch.no_grad():
            exported = torch.export.export(folded, (example,), dynamic_shapes=shapes)
            torch._inductor.aoti_compile_and_package(
                exported, package_path=args.package, inductor_configs={"freezing": True}
            )
        result["compile_s"] = time.perf_counter() - start
        result["package_mb"] = Path(args.package).stat().st_size / 2**20
    elif args.step == "aoti-load":
        loaded = torch._inductor.aoti_load_package(args.package)
        xc = x.to(memory_format=torch.channels_last)
        with torch.no_grad():
            out = loaded(xc)
        result["first_call_s"] = time.perf_counter() - start
        result["rel_err"] = rel(out)
        with torch.no_grad():
            result["ms"] = latency(lambda: loaded(xc))
            other = torch.randn(3, 3, args.img_size, args.img_size)
            result["other_batch_rel_err"] = float(
                (loaded(other.to(memory_format=torch.channels_last)) - model(other)).abs().max()
                / model(other).abs().max()
            )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnest14")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", default="compile,aoti", help="compile and/or aoti")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--package", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(child(args)))
        return 0
    cache = tempfile.mkdtemp(prefix="inductor-cache-")
    package = str(Path(cache) / "model.pt2")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
    plan = []
    if "compile" in args.steps:
        plan += [("compile", 0, "cold"), ("compile", 0, "warm"), ("compile", 1, "warm, other weights")]
    if "aoti" in args.steps:
        plan += [("aoti-compile", 0, "cold"), ("aoti-load", 0, "new process")]
    for step, seed, label in plan:
        command = [sys.executable, __file__, "--step", step, "--seed", str(seed), "--package", package]
        command += ["--model", args.model, "--img-size", str(args.img_size), "--batch", str(args.batch)]
        command += ["--threads", str(args.threads)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if done.returncode:
            print(json.dumps({"step": step, "label": label, "failed": done.stderr[-800:]}), flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row.update(label=label, process_wall_s=round(wall, 1))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
