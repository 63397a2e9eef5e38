"""The download path against a real HTTP server on 127.0.0.1: mirror, hash checks, broken transfers,
malicious pickles, cache reuse with the server gone, offline errors."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from splitattn import create_model
from splitattn.weights import (
    Checkpoint,
    ChecksumError,
    DownloadError,
    UnsafeCheckpointError,
    cache_dir,
    checkpoint_url,
    download_file,
)
from splitattn.weights.download import cached_file
from splitattn.weights.sources import TIMM_HUB, official, timm_hub

from .weights_testing import (  # noqa: F401 (fixtures)
    TINY,
    SavedWeights,
    WeightServer,
    assert_same_weights,
    isolated,
    register,
    register_official,
    server,
    tiny,
    tiny_model,
    torch_bytes,
)


@pytest.fixture
def mirror(server: WeightServer, monkeypatch: pytest.MonkeyPatch) -> WeightServer:
    monkeypatch.setenv("SPLITATTN_WEIGHTS_MIRROR", server.url)
    return server


def test_cache_honours_splitattn_home_then_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir() == tmp_path / "home" / "checkpoints"
    monkeypatch.delenv("SPLITATTN_HOME")
    assert cache_dir() == tmp_path / "torch" / "hub" / "checkpoints"


def test_mirror_replaces_the_official_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = official("resnest50", "528c19ca")
    assert checkpoint_url(checkpoint) == (
        "https://github.com/zhanghang1989/ResNeSt/releases/download/weights_step1/resnest50-528c19ca.pth"
    )
    monkeypatch.setenv("SPLITATTN_WEIGHTS_MIRROR", "http://127.0.0.1:9/resnest")
    assert checkpoint_url(checkpoint) == "http://127.0.0.1:9/resnest/resnest50-528c19ca.pth"
    monkeypatch.setenv("SPLITATTN_WEIGHTS_MIRROR", "mirror.example.org")
    with pytest.raises(ValueError, match="SPLITATTN_WEIGHTS_MIRROR.*not a URL"):
        checkpoint_url(checkpoint)


def test_good_file_downloads_verifies_and_loads(mirror: WeightServer, tiny: SavedWeights, monkeypatch) -> None:
    checkpoint = register_official(monkeypatch, tiny.data)
    mirror.files[checkpoint.filename] = tiny.data
    model = create_model("resnest14", pretrained=True, **TINY)
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert mirror.requests == [checkpoint.filename]
    assert sorted(os.listdir(cache_dir())) == [checkpoint.filename]
    assert (cache_dir() / checkpoint.filename).read_bytes() == tiny.data


def test_wrong_hash_is_refused_and_removed(mirror: WeightServer, tiny: SavedWeights, monkeypatch) -> None:
    checkpoint = official("resnest14", "0badc0de")
    register(monkeypatch, checkpoint)
    mirror.files[checkpoint.filename] = tiny.data
    with pytest.raises(ChecksumError) as error:
        create_model("resnest14", pretrained=True, **TINY)
    message = str(error.value)
    assert checkpoint.filename in message and "0badc0de" in message and tiny.sha256 in message
    assert "deleted" in message
    assert os.listdir(cache_dir()) == []


def test_transfer_cut_once_is_retried(mirror: WeightServer, tiny: SavedWeights, monkeypatch) -> None:
    checkpoint = register_official(monkeypatch, tiny.data)
    mirror.files[checkpoint.filename] = tiny.data
    mirror.cuts[checkpoint.filename] = 1
    model = create_model("resnest14", pretrained=True, **TINY)
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert mirror.requests == [checkpoint.filename] * 2


def test_transfer_cut_every_time_fails_cleanly(mirror: WeightServer, tiny: SavedWeights, monkeypatch) -> None:
    # The server announces the full Content-Length and closes halfway: each attempt is short, none is kept.
    checkpoint = register_official(monkeypatch, tiny.data)
    mirror.files[checkpoint.filename] = tiny.data
    mirror.cuts[checkpoint.filename] = 100
    short = f"transfer cut short: {len(tiny.data) // 2:,} of {len(tiny.data):,} bytes"
    with pytest.raises(DownloadError, match=f"download failed 3 times, last: {short}"):
        create_model("resnest14", pretrained=True, **TINY)
    assert mirror.requests == [checkpoint.filename] * 3
    assert os.listdir(cache_dir()) == []  # no partial or temporary file left


def _command_payload(marker: Path) -> object:
    class RunsCommand:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return os.system, (f"touch {marker}",)

    return {"conv1.0.weight": RunsCommand()}


def test_malicious_pickle_is_refused_and_never_runs(mirror: WeightServer, tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "command-ran"
    data = torch_bytes(_command_payload(marker))
    checkpoint = register_official(monkeypatch, data)  # its hash is genuine: only the loader can stop it
    mirror.files[checkpoint.filename] = data
    with pytest.raises(UnsafeCheckpointError, match=r"Refusing to load .*posix\.system"):
        create_model("resnest14", pretrained=True, **TINY)
    assert not marker.exists()
    # Control: the payload is live, a plain torch.load would have run it.
    torch.load(cache_dir() / checkpoint.filename, weights_only=False)
    assert marker.exists()


def test_legacy_pickle_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "command-ran"
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps(_command_payload(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="Refusing to load"):
        create_model("resnest14", pretrained=str(path), **TINY)
    assert not marker.exists()


def test_cached_file_is_used_with_the_server_stopped(mirror: WeightServer, tiny: SavedWeights, monkeypatch) -> None:
    checkpoint = register_official(monkeypatch, tiny.data)
    mirror.files[checkpoint.filename] = tiny.data
    create_model("resnest14", pretrained=True, **TINY)
    mirror.stop()
    model = create_model("resnest14", pretrained=True, **TINY)
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert mirror.requests == [checkpoint.filename]


def test_corrupt_cached_file_is_deleted_and_fetched_again(
    mirror: WeightServer, tiny: SavedWeights, monkeypatch
) -> None:
    checkpoint = register_official(monkeypatch, tiny.data)
    mirror.files[checkpoint.filename] = tiny.data
    cached = cache_dir() / checkpoint.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny.data[:1000])
    with pytest.warns(UserWarning, match=f"{checkpoint.filename}: sha256 is .* but {checkpoint.sha256}.*fetched again"):
        model = create_model("resnest14", pretrained=True, **TINY)
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert cached.read_bytes() == tiny.data
    assert mirror.requests == [checkpoint.filename]


def test_corrupt_cached_file_offline_is_deleted(tiny: SavedWeights, monkeypatch) -> None:
    checkpoint = register_official(monkeypatch, tiny.data)
    cached = cache_dir() / checkpoint.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny.data[:1000])
    with pytest.warns(UserWarning, match=f"sha256 is .* but {checkpoint.sha256}"), pytest.raises(DownloadError):
        create_model("resnest14", pretrained=True, **TINY)
    assert not cached.exists()


def test_offline_without_cache_says_where_to_put_the_file() -> None:
    with pytest.raises(DownloadError) as error:
        create_model("resnest50", pretrained=True)
    message = str(error.value)
    for checkpoint in (official("resnest50", "528c19ca"),):
        assert checkpoint.url in message
        assert str(cache_dir() / checkpoint.filename) in message
    assert "https://huggingface.co/timm/resnest50d.in1k/resolve/main/model.safetensors" in message
    assert str(cache_dir() / "resnest50d.in1k.safetensors") in message
    assert "cannot connect" in message


def test_second_source_is_used_when_the_first_is_missing(mirror: WeightServer, tiny: SavedWeights, monkeypatch) -> None:
    missing = official("resnest14", "12345678")
    hub = Checkpoint("resnest14", "tiny.in1k.safetensors", "https://huggingface.co/x/y/model.safetensors", TIMM_HUB)
    register(monkeypatch, missing, hub)
    mirror.files[hub.filename] = safetensors.torch.save(tiny.state_dict)
    model = create_model("resnest14", pretrained=True, **TINY)
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert mirror.requests == [missing.filename, hub.filename]


def test_pretrained_url_checks_a_hash_in_its_name(server: WeightServer, tiny: SavedWeights) -> None:
    good, bad = f"finetuned-{tiny.sha256[:8]}.pth", "finetuned-00000000.pth"
    server.files.update({good: tiny.data, bad: tiny.data, "model.safetensors": safetensors.torch.save(tiny.state_dict)})
    assert_same_weights(tiny_model(pretrained=server.url + good).state_dict(), tiny.state_dict)
    assert_same_weights(tiny_model(pretrained=server.url + "model.safetensors").state_dict(), tiny.state_dict)
    with pytest.raises(ChecksumError, match=f"{bad}: sha256 is {tiny.sha256} but 00000000"):
        tiny_model(pretrained=server.url + bad)
    cached = sorted(os.listdir(cache_dir()))
    assert len(cached) == 2 and good in cached and cached[1].endswith("-model.safetensors")
    assert hashlib.sha256((cache_dir() / good).read_bytes()).hexdigest() == tiny.sha256


def test_download_shows_a_progress_bar_on_request(server: WeightServer, tmp_path: Path, capsys) -> None:
    data = b"\x00" * 300_000
    server.files["blob.bin"] = data
    dest = download_file(
        server.url + "blob.bin", tmp_path / "blob.bin", hashlib.sha256(data).hexdigest()[:8], progress=True
    )
    assert dest.read_bytes() == data
    bar = capsys.readouterr().err
    assert "100%" in bar and "293k/293k" in bar


def test_a_file_url_mirror_works(tmp_path: Path, tiny: SavedWeights, monkeypatch) -> None:
    checkpoint = register_official(monkeypatch, tiny.data)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / checkpoint.filename).write_bytes(tiny.data)
    monkeypatch.setenv("SPLITATTN_WEIGHTS_MIRROR", (tmp_path / "mirror").as_uri())
    assert_same_weights(create_model("resnest14", pretrained=True, **TINY).state_dict(), tiny.state_dict)
    assert (cache_dir() / checkpoint.filename).read_bytes() == tiny.data


def test_hub_copy_comes_through_huggingface_hub_and_its_cache(
    server: WeightServer, tiny: SavedWeights, tmp_path: Path, monkeypatch
) -> None:
    """Hub copies are fetched by ``hf_hub_download`` at the pinned revision (``HF_ENDPOINT`` points it at the
    local server, which answers in the hub's resolve/ layout), land in the Hugging Face cache that timm shares,
    and load from there with the server gone and ``HF_HUB_OFFLINE`` on."""
    from huggingface_hub import constants as hf_constants

    checkpoint = timm_hub("resnest14", "timm/tiny.in1k", 0.875, "bilinear", revision="v1")
    register(monkeypatch, checkpoint)
    hub_path = "timm/tiny.in1k/resolve/v1/model.safetensors"
    server.files[hub_path] = safetensors.torch.save(tiny.state_dict)
    monkeypatch.setenv("HF_ENDPOINT", server.url.rstrip("/"))
    assert_same_weights(create_model("resnest14", pretrained=True, **TINY).state_dict(), tiny.state_dict)
    assert server.requests == [hub_path]
    assert not cache_dir().exists() or os.listdir(cache_dir()) == []  # not copied into our cache
    cached = cached_file(checkpoint)
    assert cached is not None and (tmp_path / "hf" / "hub" / "models--timm--tiny.in1k") in cached.parents
    server.stop()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert_same_weights(create_model("resnest14", pretrained=True, **TINY).state_dict(), tiny.state_dict)
    assert server.requests == [hub_path]


def test_hub_copy_missing_offline_says_where_to_put_it(tiny: SavedWeights, monkeypatch) -> None:
    from huggingface_hub import constants as hf_constants

    checkpoint = timm_hub("resnest14", "timm/tiny.in1k", 0.875, "bilinear")
    register(monkeypatch, checkpoint)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        DownloadError, match=r"not fetched \(HF_HUB_OFFLINE is set\) and the Hugging Face cache"
    ) as error:
        create_model("resnest14", pretrained=True, **TINY)
    assert str(cache_dir() / "tiny.in1k.safetensors") in str(error.value)
