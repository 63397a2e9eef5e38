"""Reproduce and fix the stale-weights bug of ``optimize_for_inference(backend="compile")`` (issue 18, scope 0).

Two fast-path models of the same architecture and different weights in one process: the second must
compute its own weights' function. The cause: ``torch.compile(options={"freezing": True})`` only sets
Inductor's ``freezing`` for the Inductor compile, while Dynamo decides at trace time whether parameters get
an identity guard from the *global* ``torch._inductor.config.freezing`` (``torch._dynamo.utils
.is_parameter_freezing``). With the global flag off, the parameters are marked static without a guard,
frozen into the graph as constants, and the cache entry on ``ResNeSt.forward``'s code object matches any
other instance of the class: the second model runs the first one's weights.

Fixes compared (each in a fresh process, so caches never leak between them):

* ``none``: the library as it is (shows the bug).
* ``guard``: trace with ``torch._inductor.config.patch(freezing=True)`` as well, so Dynamo installs an
  ``ID_MATCH`` guard on every parameter: a new model recompiles (recompile limit 8 per code object).
* ``fresh-code``: wrap each optimised model in a module whose ``forward`` is a *copy* of a code object
  (``types.CodeType.replace``): Dynamo's cache lives on the code object, so every model has its own cache
  (dies with the model, no recompile limit, no guards on ~300 parameters).
* ``reset``: ``torch.compiler.reset()`` before each ``optimize_for_inference`` (process-wide: every other
  compiled model recompiles on its next call).

For each: relative error of both models against eager timm-equivalent outputs (our eager model with the
same weights), compile seconds of each, the id-reuse case (first model deleted, a new one made), and the
per-call overhead of the fix (batch 1, small image, interleaved rounds).

    PYTHONPATH=. python benchmarks/stale_weights.py --fix all --model resnest14 --img-size 96
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import types

FIXES = ("none", "guard", "fresh-code", "reset")


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def with_own_code(net):
    """``net`` inside a module whose ``forward`` is a fresh copy of a code object: Dynamo keeps its cache (and the
    compiled graphs with their frozen weights) on the code object, so this model gets a cache of its own, which
    dies with it."""
    from torch import nn

    class Holder(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    Holder.forward = types.FunctionType(Holder.forward.__code__.replace(), Holder.forward.__globals__, "forward")
    return Holder(net)


def make_fast(model, fix: str):
    """``optimize_for_inference(model)`` with ``fix`` applied (monkeypatched here, the library untouched)."""
    import torch

    from splitattn.deploy import optimize

    if fix == "reset":
        torch.compiler.reset()
    fast = optimize.optimize_for_inference(model, "fp32", backend="compile")
    if fix == "guard":

        def forward(self, x):
            optimize.check_image_batch(x, self.in_chans)
            with (
                torch.inference_mode(),
                torch._dynamo.config.patch(prepare_freezing=True),
                torch._inductor.config.patch(freezing=True),
            ):
                out = self.inner(x.to(dtype=self.dtype, memory_format=self.memory_format))
            return out.to(torch.float32, copy=True)

        fast.forward = types.MethodType(forward, fast)
    elif fix == "fresh-code":
        compiled = fast.inner
        eager = compiled._orig_mod

        fast.inner = torch.compile(with_own_code(eager), options={"freezing": True})
    return fast


def run_one(fix: str, model_name: str, img_size: int, rounds: int) -> dict:
    import torch

    from splitattn.models import create_model

    torch.set_num_threads(1)
    x = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    result = {"fix": fix}

    def build(seed):
        torch.manual_seed(seed)
        model = create_model(model_name, num_classes=10).eval()
        with torch.no_grad():  # non-trivial BN statistics, so folding is exercised
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        return model

    def timed(fast):
        start = time.perf_counter()
        out = fast(x)
        return out, time.perf_counter() - start

    a, b = build(1), build(2)
    with torch.no_grad():
        ref_a, ref_b = a(x), b(x)
    fast_a = make_fast(a, fix)
    out_a, result["compile_s_first"] = timed(fast_a)
    fast_b = make_fast(b, fix)
    out_b, result["compile_s_second"] = timed(fast_b)
    result["err_first"] = _rel(out_a, ref_a)
    result["err_second_vs_own_weights"] = _rel(out_b, ref_b)
    result["err_second_vs_first_weights"] = _rel(out_b, ref_a)
    result["err_first_after_second"] = _rel(fast_a(x), ref_a)
    # a model trained further (weights changed in place) and optimised again
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        ref_a2 = a(x)
    fast_a2 = make_fast(a, fix)
    out_a2, result["compile_s_reoptimised"] = timed(fast_a2)
    result["err_reoptimised_vs_new_weights"] = _rel(out_a2, ref_a2)
    # the first model dropped, a new one built: parameter ids may be reused
    del fast_a, fast_a2
    gc.collect()
    c = build(3)
    with torch.no_grad():
        ref_c = c(x)
    fast_c = make_fast(c, fix)
    out_c, result["compile_s_after_delete"] = timed(fast_c)
    result["err_after_delete"] = _rel(out_c, ref_c)
    # per-call cost of the fix: the same compiled model, many small calls
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            fast_b(x)
        seconds.append((time.perf_counter() - start) / 20)
    result["call_ms_median"] = 1e3 * statistics.median(seconds)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fix", default="all", help=f"one of {', '.join(FIXES)} or all (each in its own process)")
    parser.add_argument("--model", default="resnest14")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by --fix all)")
    args = parser.parse_args()
    if args.fix == "all":
        rows = []
        for fix in FIXES:
            command = [sys.executable, __file__, "--fix", fix, "--model", args.model, "--img-size", str(args.img_size)]
            command += ["--rounds", str(args.rounds), "--json"]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
        keys = list(rows[0])
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
        return 0
    if args.fix not in FIXES:
        parser.error(f"--fix must be one of {', '.join(FIXES)} or all")
    result = run_one(args.fix, args.model, args.img_size, args.rounds)
    print(json.dumps(result) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
