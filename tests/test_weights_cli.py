"""``splitattn weights list/download/verify/convert``, against the local HTTP server where they fetch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch

from splitattn import create_model
from splitattn.cli import main
from splitattn.weights import Checkpoint, cache_dir, load_checkpoint
from splitattn.weights.sources import TIMM_HUB

from .weights_testing import (  # noqa: F401 (fixtures)
    SavedWeights,
    WeightServer,
    assert_same_weights,
    isolated,
    register,
    register_official,
    server,
    tiny,
    torch_bytes,
)


@pytest.fixture(scope="session")
def resnest14_weights() -> SavedWeights:
    """Weights with resnest14's real shapes (half precision keeps the file at ~21 MB)."""
    torch.manual_seed(0)
    state_dict = create_model("resnest14").half().state_dict()
    return SavedWeights(state_dict, torch_bytes(state_dict))


def timm_estimate(timm_name: str) -> str:
    """The size of timm's float32 model of that name (every state-dict tensor), as the list prints an estimate."""
    with torch.device("meta"):
        state_dict = timm.create_model(timm_name).state_dict()
    return f"~{sum(t.numel() * t.element_size() for t in state_dict.values()) / 2**20:.1f}"


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple:
    code = main(["weights", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_sources_hashes_sizes_and_cache_state(capsys, tiny: SavedWeights, monkeypatch) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("resnest")]
    assert len(rows) == 19 and all(row[-2] == "no" for row in rows)
    # hashes and file names: the authors' release URL and timm's pretrained tag (tests/test_weights.py)
    official = ["resnest50", "official", "528c19ca", timm_estimate("resnest50d"), "MB", "no", "resnest50-528c19ca.pth"]
    assert official in rows
    hub = [
        "resnest14",
        "timm-hub",
        "none",
        timm_estimate("resnest14d"),
        "MB",
        "no",
        "resnest14d.gluon_in1k.safetensors",
    ]
    assert hub in rows
    checkpoint = register_official(monkeypatch, tiny.data)
    (cache_dir() / checkpoint.filename).parent.mkdir(parents=True)
    (cache_dir() / checkpoint.filename).write_bytes(tiny.data)
    code, out, _ = run(capsys, "list", "resnest14")
    size = f"{len(tiny.data) / 2**20:.1f}"
    assert code == 0 and out.splitlines()[0] == f"cache: {cache_dir()}"
    assert [line.split() for line in out.splitlines() if line.startswith("resnest")] == [
        ["resnest14", "official", checkpoint.sha256, size, "MB", "yes", checkpoint.filename]
    ]
    assert run(capsys, "list", "resnet*")[0] == 1


def test_download_verifies_hash_and_shapes(
    capsys, server: WeightServer, resnest14_weights: SavedWeights, monkeypatch
) -> None:
    monkeypatch.setenv("SPLITATTN_WEIGHTS_MIRROR", server.url)
    hub = Checkpoint("resnest14", "r14.in1k.safetensors", "https://huggingface.co/timm/r14/model.safetensors", TIMM_HUB)
    register(monkeypatch, hub)
    code, _, err = run(capsys, "download", "resnest14", "--source", "official")
    assert code == 1 and "resnest14 has no official checkpoint" in err
    code, _, err = run(capsys, "download", "resnest14d")
    assert code == 1 and "r14.in1k.safetensors" in err and "HTTP 404" in err
    assert not (cache_dir() / hub.filename).exists()

    checkpoint = register_official(monkeypatch, resnest14_weights.data)
    server.files[checkpoint.filename] = resnest14_weights.data
    code, out, _ = run(capsys, "download", "resnest14d")
    assert code == 0
    assert out.splitlines()[0] == str(cache_dir() / checkpoint.filename)
    assert f"{server.url}{checkpoint.filename}" in out
    assert f"sha256 {resnest14_weights.sha256} matches the published prefix {checkpoint.sha256}" in out
    assert "keys and shapes match resnest14" in out


def test_verify_reports_hash_safety_and_model(
    capsys, tmp_path: Path, tiny: SavedWeights, resnest14_weights: SavedWeights
) -> None:
    real = tmp_path / f"r14-{resnest14_weights.sha256[:8]}.pth"
    real.write_bytes(resnest14_weights.data)
    code, out, _ = run(capsys, "verify", str(real))
    assert code == 0
    assert f"sha256 {resnest14_weights.sha256}: matches {resnest14_weights.sha256[:8]}" in out
    assert "keys and shapes match: resnest14" in out

    small = tmp_path / "tiny.pth"
    small.write_bytes(tiny.data)
    code, out, _ = run(capsys, "verify", str(small))
    assert code == 1 and "no hash registered or in the name" in out and "matches no registered model" in out
    code, _, err = run(capsys, "verify", str(small), "--model", "resnest14")
    assert code == 1 and "does not fit resnest14" in err and "shape mismatches" in err

    renamed = tmp_path / "r14-00000000.pth"
    renamed.write_bytes(resnest14_weights.data)
    code, _, err = run(capsys, "verify", str(renamed))
    assert code == 1 and "00000000 was expected" in err and renamed.exists()


def test_verify_refuses_code_without_running_it(capsys, tmp_path: Path) -> None:
    marker = tmp_path / "command-ran"

    class RunsCommand:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return __import__("os").system, (f"touch {marker}",)

    evil = tmp_path / "evil.pth"
    evil.write_bytes(torch_bytes({"fc.weight": RunsCommand()}))
    code, _, err = run(capsys, "verify", str(evil))
    assert code == 1 and "Refusing to load" in err and not marker.exists()


def test_convert_strips_training_state_both_ways(capsys, tmp_path: Path, tiny: SavedWeights) -> None:
    training = tmp_path / "last.pth"
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in tiny.state_dict.items()},
            "optimizer": {"state": {}},
            "epoch": 90,
            "model_ema": tiny.state_dict,
        },
        training,
    )
    code, out, _ = run(capsys, "convert", str(training), str(tmp_path / "w.safetensors"))
    safe = tmp_path / "w.safetensors"
    assert code == 0 and f"sha256 {hashlib.sha256(safe.read_bytes()).hexdigest()}" in out
    assert_same_weights(load_checkpoint(safe), tiny.state_dict)
    assert run(capsys, "convert", str(safe), str(tmp_path / "w.pth"))[0] == 0
    assert_same_weights(torch.load(tmp_path / "w.pth", weights_only=True), tiny.state_dict)
    code, _, err = run(capsys, "convert", str(training), str(tmp_path / "w.onnx"))
    assert code == 2 and "Cannot tell the format" in err  # a usage error: the output's name
