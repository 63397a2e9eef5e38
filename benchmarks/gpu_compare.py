"""resnest50 against timm's resnest50d and torchvision's resnet50 on one GPU, every model run the same way.

    python benchmarks/gpu_compare.py [--batches 64,256] [--rounds 5]

For each batch size: inference and one SGD training step, bf16 autocast, channels_last, eager and
``torch.compile``d, rounds interleaved (``splitattn.deploy.benchmark``), medians in images/s and the
ratio of each baseline's time to ours (> 1: ours is faster). Called by ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import sys

import timm
import torch
import torchvision

import splitattn
from splitattn.deploy import benchmark as bench


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_compare.py needs a CUDA GPU.")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"{bench.machine_description(device)}; bf16 autocast, channels_last; {args.rounds} interleaved rounds")
    ours = splitattn.create_model("resnest50")
    twin = timm.create_model("resnest50d")
    twin.load_state_dict(ours.state_dict())
    models = {
        "splitattn resnest50": ours,
        "timm resnest50d": twin,
        "torchvision resnet50": torchvision.models.resnet50(),
    }
    batches = [int(b) for b in args.batches.split(",")]
    for mode in ("infer", "train"):
        for compiled in (False, True):
            # One compilation per model and mode: the batch dimension is marked dynamic.
            nets = {
                name: model.to(device=device, memory_format=torch.channels_last).train(mode == "train")
                for name, model in models.items()
            }
            if compiled:
                nets = {name: torch.compile(net) for name, net in nets.items()}
            for batch in batches:
                x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
                torch._dynamo.mark_dynamic(x, 0)
                labels = torch.randint(0, 1000, (batch,), device=device)
                fns = {
                    name: bench.inference_step(net, x, torch.bfloat16)
                    if mode == "infer"
                    else bench.train_step(net, x, labels, torch.bfloat16)
                    for name, net in nets.items()
                }
                results = {name: bench.Result(name, mode, batch, 0.0, "bf16") for name in nets}
                bench.interleaved(results, fns, args.rounds, 1, args.warmup, device)
                ours = results["splitattn resnest50"]
                case = f"{mode} b{batch} {'compiled' if compiled else 'eager'}"
                for name, result in results.items():
                    ratio = "" if result is ours else f"  ours: {bench.speedup(ours, result):.2f}x its speed"
                    print(f"{case:<22} {name:<22} {batch / result.median:>9.0f} img/s{ratio}", flush=True)
            torch._dynamo.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
