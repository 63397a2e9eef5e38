"""Scratch variants of our fast path, for finding what separates it from timm + ``torch.compile`` (issue 18, §7).

Nothing here changes the library: each patch builds the compiled model differently in this process only.
``patched_fast_path(model, precision, "direct,cpp-wrapper")`` returns a callable: float32 NCHW images ->
float32 logits. Patches (comma-separated):

* ``direct``: call the compiled network under ``no_grad`` only, without ``InferenceModel``'s per-call
  ``torch._dynamo.config.patch`` context, ``inference_mode``, input check and output copy (the wrapper's cost).
* ``nofold``: do not fold BatchNorm before compiling (Inductor's freezing folds conv+BN itself, as for timm).
* ``no-cl``: NCHW activations instead of channels_last.
* ``cpp-wrapper``: ``torch._inductor.config.cpp_wrapper = True`` while compiling: the generated code calls its
  kernels from C++ instead of a Python wrapper (less per-kernel overhead at small batches).
* ``no-asserts``: ``size_asserts`` / ``alignment_asserts`` / ``scalar_asserts`` off: the generated Python wrapper
  otherwise checks every extern kernel's output size, stride and alignment on every call.
* ``timm-attn``: SplitAttention's forward written as timm's ``SplitAttn`` writes it (explicit batch size in the
  reshapes instead of -1, ``sum``/``mean`` order and softmax over an explicit radix view).

    python benchmarks/bench_runtimes.py --runners timm-compile-fp32,ours-compile-fp32,ours-patched-fp32 --patch direct
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_int8.py
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

PATCHES = ("direct", "nofold", "no-cl", "cpp-wrapper", "no-asserts", "timm-attn")


def timm_style_forward(self, x):
    """SplitAttention as timm's ``SplitAttn.forward`` computes it (same function, other graph)."""
    x = F.relu(self.drop_block(self.bn0(self.conv(x))), inplace=True)
    batch, channels, height, width = x.shape
    if self.radix > 1:
        x = x.reshape(batch, self.radix, channels // self.radix, height, width)
        gap = x.sum(dim=1)
    else:
        gap = x
    gap = gap.mean((2, 3), keepdim=True)
    hidden = F.relu(self.bn1(self.fc1(gap)), inplace=True)
    attn = self.fc2(hidden)
    if self.radix > 1:
        attn = attn.view(batch, self.cardinality, self.radix, -1).transpose(1, 2).softmax(dim=1)
        attn = attn.reshape(batch, self.radix, -1, 1, 1)
        return (x * attn).sum(dim=1)
    return x * attn.sigmoid()


def patched_fast_path(model: torch.nn.Module, precision: str, patches: str):
    """A compiled copy of ``model`` built with ``patches`` (see module doc); float32 in, float32 out."""
    from splitattn.deploy import optimize

    chosen = [p for p in patches.split(",") if p]
    unknown = set(chosen) - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown patches {sorted(unknown)}; choose from {PATCHES}")
    dtype = optimize.precision_dtype(precision)
    memory_format = torch.contiguous_format if "no-cl" in chosen else torch.channels_last
    net = copy.deepcopy(model).eval()
    if "timm-attn" in chosen:
        from splitattn.layers import SplitAttention

        for module in net.modules():
            if isinstance(module, SplitAttention):
                module.forward = timm_style_forward.__get__(module)
    if "nofold" not in chosen:
        net = optimize.fold_batch_norm(net)
    net = net.to(dtype=dtype, memory_format=memory_format)
    for param in net.parameters():
        param.requires_grad_(False)
    options = {"freezing": True, "cpp_wrapper": "cpp-wrapper" in chosen}
    if "no-asserts" in chosen:
        options.update(size_asserts=False, alignment_asserts=False, scalar_asserts=False)
    compiled = torch.compile(net, options=options)
    if "direct" in chosen:

        def run(x):
            with torch.no_grad():
                return compiled(x.to(dtype=dtype, memory_format=memory_format)).float()

        return run
    channels_last = memory_format == torch.channels_last
    return optimize.InferenceModel(compiled, dtype, channels_last, 3, precision, "compile").eval()


def kernel_census(code: str) -> dict:
    """Counts of what one generated Inductor module calls: oneDNN/ATen extern kernels by name, generated C++
    kernels, and buffers allocated (the structure that decides the speed at batch 1)."""
    import re
    from collections import Counter

    externs = Counter(re.findall(r"(torch\.ops\.[\w.]+|extern_kernels\.\w+|aten\.\w+)\(", code))
    return {
        "cpp_kernels_defined": len(re.findall(r"extern \"C\"", code)),
        "kernel_calls": len(re.findall(r"^\s+cpp_fused_\w+\(", code, flags=re.M)),
        "externs": dict(externs.most_common(12)),
        "empty_strided": code.count("empty_strided"),
    }


def main() -> int:
    import argparse
    import json
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnest14")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--variants",
        default="timm;ours;direct;nofold,direct;timm-attn,direct",
        help="';'-separated: timm, ours (the library), or a patch list",
    )
    parser.add_argument("--dump", default=None, help="folder for the generated code of each variant")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import timm
    from torch._inductor.utils import run_and_get_code

    from splitattn.deploy.optimize import optimize_for_inference
    from splitattn.models import create_model, get_model_spec

    torch.set_num_threads(2)
    torch._inductor.config.freezing = True
    torch.manual_seed(0)
    ours = create_model(args.model).eval()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    for variant in args.variants.split(";"):
        if variant == "timm":
            twin = timm.create_model(get_model_spec(args.model).timm_name).eval()
            twin.load_state_dict(ours.state_dict())
            dt = torch.bfloat16 if args.precision == "bf16" else torch.float32
            net = torch.compile(twin.to(dt, memory_format=torch.channels_last))
            xv = x.to(dt, memory_format=torch.channels_last)

            def fn(net=net, xv=xv):
                with torch.no_grad():
                    return net(xv)
        elif variant == "ours":
            net = optimize_for_inference(ours, args.precision)

            def fn(net=net):
                return net(x)
        else:
            net = patched_fast_path(ours, args.precision, variant)

            def fn(net=net):
                return net(x)

        _, codes = run_and_get_code(fn)
        code = "\n".join(codes)
        if args.dump:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            Path(args.dump, variant.replace(",", "+") + ".py").write_text(code)
        print(variant, json.dumps(kernel_census(code)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
