"""The GPU paths, run with ``pytest -m cuda`` on a machine with CUDA (skipped without one): AMP fp16 with
GradScaler, SyncBatchNorm over NCCL, channels_last on CUDA, CUDA graphs in the benchmark, the fp16 fast path.
``benchmarks/gpu_check.sh`` runs them before timing."""

from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

import splitattn
from splitattn.cli import main
from splitattn.deploy import benchmark as bench
from splitattn.optimize.inference import optimize_for_inference

from .conftest import randomize_state_dict, relative_error

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with `pytest -m cuda`)"),
]
TINY = {"num_classes": 10, "bottleneck_width": 16, "stem_width": 16}


def tiny_model(**overrides) -> nn.Module:
    torch.manual_seed(0)
    model = splitattn.create_model("resnest14", **{**TINY, **overrides})
    model.load_state_dict(randomize_state_dict(model.state_dict()))
    return model


def test_amp_fp16_step_with_grad_scaler_updates_every_parameter():
    model = tiny_model().cuda().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    before = copy.deepcopy(model.state_dict())
    x, y = torch.randn(8, 3, 64, 64, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        assert loss.dtype == torch.float32
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    assert torch.isfinite(loss) and scaler.get_scale() > 0
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > 0.9 * sum(v.is_floating_point() for v in before.values())


def test_sync_batch_norm_over_nccl_equals_batch_norm_on_one_process():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        plain = tiny_model().cuda().train()
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
        assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
        ddp = nn.parallel.DistributedDataParallel(synced, device_ids=[torch.cuda.current_device()])
        x = torch.randn(4, 3, 64, 64, device="cuda")
        out_plain, out_synced = plain(x), ddp(x)
        assert relative_error(out_synced, out_plain) < 1e-4
        out_synced.sum().backward()
        out_plain.sum().backward()
        for (name, a), b in zip(plain.named_parameters(), synced.parameters()):
            assert relative_error(b.grad, a.grad) < 1e-3, name
    finally:
        dist.destroy_process_group()


def test_channels_last_on_cuda_matches_nchw():
    model = tiny_model().cuda().eval()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert relative_error(out, reference) < 1e-4
    features = splitattn.create_model("resnest14", features_only=True, bottleneck_width=16, stem_width=16).cuda().eval()
    with torch.no_grad():
        maps = features.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert maps[-1].is_contiguous(memory_format=torch.channels_last)


def test_cuda_graph_replays_the_eager_forward():
    model = tiny_model().cuda().eval()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        expected = model(x)
    outputs = []
    replay = bench.cuda_graph_step(lambda inp: outputs.append(model(inp)) or outputs[-1], x, None)
    replay()
    torch.cuda.synchronize()
    assert relative_error(outputs[-1], expected) < 1e-4
    assert (
        main(
            [
                "benchmark",
                "--model",
                "resnest14",
                "--device",
                "cuda",
                "--img-size",
                "64",
                "--batch-size",
                "4",
                "--rounds",
                "1",
                "--warmup",
                "1",
                "--cuda-graphs",
                "--precision",
                "fp32,bf16",
            ]
        )
        == 0
    )


def test_fp16_fast_path_on_cuda_agrees_with_fp32():
    model = tiny_model().cuda().eval()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    fast = optimize_for_inference(model, "fp16", backend="eager")
    with torch.no_grad():
        assert relative_error(fast(x), model(x)) < 2e-2


def test_cudnn_benchmark_training_step_is_finite():
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        model = tiny_model().cuda().train()
        x = torch.randn(4, 3, 64, 64, device="cuda")
        loss = model(x).square().mean()
        loss.backward()
        assert torch.isfinite(loss) and all(
            torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
        )
    finally:
        torch.backends.cudnn.benchmark = previous
