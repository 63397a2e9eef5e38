"""Time splitattn's resnest50 against timm's resnest50d in the same process.

Eager CPU inference at batch 1 and 16 and one training step at batch 16, 224x224.
Rounds are interleaved (ours, timm, ours, timm, ...) so machine drift hits both alike;
medians over rounds; the ratio timm_time / our_time is printed (> 1 means we are faster).

    python benchmarks/bench_vs_timm.py [--rounds 7] [--threads 2] [--model resnest50]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import nn

import splitattn


def time_call(fn: Callable[[], None], repeats: int) -> float:
    """Seconds per call, the best of ``repeats`` consecutive calls after the caller's warm-up."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def inference(model: nn.Module, batch: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(batch)

    return run


def train_step(model: nn.Module, batch: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(batch), labels).backward()
        optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnest50", help="our model name; timm's is the registered alias")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--img-size", type=int, default=224)
    args = parser.parse_args()
    import timm

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    spec = splitattn.get_model_spec(args.model)
    models = {"splitattn": splitattn.create_model(args.model), "timm": timm.create_model(spec.timm_name)}
    models["timm"].load_state_dict(models["splitattn"].state_dict())
    size = args.img_size
    x1, x16 = torch.randn(1, 3, size, size), torch.randn(16, 3, size, size)
    labels = torch.randint(0, 1000, (16,))
    cases: Dict[str, Dict[str, Callable[[], None]]] = {}
    for name, model in models.items():
        model.eval()
        cases.setdefault("infer b1", {})[name] = inference(model, x1)
        cases.setdefault("infer b16", {})[name] = inference(model, x16)
    for name in models:  # training copies so the eval ones stay untouched
        train_model = (splitattn.create_model(args.model) if name == "splitattn" else timm.create_model(spec.timm_name))
        train_model.load_state_dict(models["splitattn"].state_dict())
        cases.setdefault("train b16", {})[name] = train_step(train_model.train(), x16, labels)

    print(f"{args.model} vs timm {spec.timm_name}, {size}x{size}, {args.threads} threads, torch {torch.__version__}, "
          f"{args.rounds} interleaved rounds (median)")
    print(f"{'case':<10} {'splitattn ms':>13} {'timm ms':>9} {'timm/ours':>10}")
    for case, fns in cases.items():
        repeats = 5 if case == "infer b1" else 2
        for fn in fns.values():  # warm-up
            fn()
        samples: Dict[str, List[float]] = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                samples[name].append(time_call(fn, repeats))
        ours, theirs = statistics.median(samples["splitattn"]), statistics.median(samples["timm"])
        ratios = [t / o for o, t in zip(samples["splitattn"], samples["timm"])]
        print(f"{case:<10} {ours * 1e3:>13.1f} {theirs * 1e3:>9.1f} {statistics.median(ratios):>9.3f}x")


if __name__ == "__main__":
    main()
