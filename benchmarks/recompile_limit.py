"""How the two stale-weights fixes behave with many models in one process (see stale_weights.py).

Eleven instances of a small conv net, each compiled with Inductor freezing and checked against its own eager
output. ``MODE=guard``: parameters guarded by identity (trace under ``torch._inductor.config.patch(freezing=True)``)
- from the 9th model on Dynamo's ``recompile_limit`` (8) is hit and the model runs eagerly (right, not fast).
``MODE=fresh``: each model wrapped in a module whose ``forward`` is a copy of a code object - every model compiles.

    MODE=guard python benchmarks/recompile_limit.py ; MODE=fresh python benchmarks/recompile_limit.py

(``--help`` prints this text.)
"""

import sys

if "--help" in sys.argv or "-h" in sys.argv:
    print(__doc__)
    sys.exit(0)
import os
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
from stale_weights import with_own_code
from torch import nn

torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.Conv2d(3, 8, 3)
        s.l = nn.Linear(8, 4)

    def forward(s, x):
        return s.l(s.c(x).relu().mean((2, 3)))


x = torch.randn(1, 3, 16, 16)
mode = os.environ.get("MODE", "guard")


def make(net):
    if mode == "guard":
        c = torch.compile(net, options={"freezing": True})

        def run(x):
            with torch.no_grad(), torch._inductor.config.patch(freezing=True):
                return c(x)

        return run

    c = torch.compile(with_own_code(net), options={"freezing": True})

    def run(x):
        with torch.no_grad():
            return c(x)

    return run


bad = 0
t0 = time.perf_counter()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    for i in range(11):
        torch.manual_seed(i)
        net = Net().eval()
        with torch.no_grad():
            ref = net(x)
        out = make(net)(x)
        err = float((out - ref).abs().max())
        bad += err > 1e-5
        print(
            mode,
            i,
            f"err {err:.1e}",
            "compiled graphs so far",
            torch._dynamo.utils.counters["stats"]["unique_graphs"],
            flush=True,
        )
print(
    mode,
    "wrong outputs:",
    bad,
    f"time {time.perf_counter() - t0:.0f}s",
    "warnings:",
    [str(m.message)[:120] for m in w if "recompile" in str(m.message).lower()][:2],
)
