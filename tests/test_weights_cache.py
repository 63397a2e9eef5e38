"""Weights from a cache are what they claim (issue 19, item 5), and offline fails in seconds (item 4).

- The evaluation protocol follows the file actually loaded: a hub copy found in a Hugging Face cache filled
  by ``huggingface_hub`` itself gets timm's transform for it (``timm.data.create_transform`` with the timm
  model's pretrained config), pixel for pixel on real images.
- A download cut short for a file without a published hash is never cached; a cached file that cannot be
  read (or fails the hub's sha256) is fetched again once, with a warning.
- With the hosts unreachable, one connection attempt per source, then one error naming ``HF_HUB_OFFLINE=1``,
  the mirror variable and the caches.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import List

import pytest
import safetensors.torch
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download

from splitattn.data.transforms import create_eval_transform
from splitattn.errors import DownloadError
from splitattn.models.factory import create_model
from splitattn.weights.download import cache_dir
from splitattn.weights.sources import CHECKPOINTS, checkpoint_for_file

from .conftest import sample_photos
from .weights_testing import (  # noqa: F401 (fixtures)
    TINY,
    SavedWeights,
    WeightServer,
    assert_same_weights,
    isolated,
    register,
    server,
    tiny,
    tiny_model,
)


def _hub_path(repo: str, revision: str = "main") -> str:
    return f"{repo}/resolve/{revision}/model.safetensors"


@pytest.fixture
def hub(server: WeightServer, monkeypatch: pytest.MonkeyPatch) -> WeightServer:
    """The local server as the hub endpoint (``HF_ENDPOINT``)."""
    monkeypatch.setenv("HF_ENDPOINT", server.url.rstrip("/"))
    return server


def test_hub_copy_in_the_hf_cache_gets_timms_transform_pixel_for_pixel(
    hub: WeightServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    repo = "timm/resnest50d.in1k"  # the registered second source of resnest50 (the official file is first)
    assert CHECKPOINTS["resnest50"][1].repo == repo
    weights = create_model("resnest50", **TINY).state_dict()  # resnest50's structure at 1/8 width
    hub.files[_hub_path(repo)] = safetensors.torch.save(weights)
    # The Hugging Face cache, filled as timm would fill it: hf_hub_download at the same revision.
    cached = Path(hf_hub_download(repo, "model.safetensors", revision="main", endpoint=hub.url.rstrip("/")))
    assert cached.name == "model.safetensors" and cached.parent.parent.name == "snapshots"
    assert checkpoint_for_file(cached) is CHECKPOINTS["resnest50"][1]
    hub.stop()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    model = create_model("resnest50", pretrained=True, **TINY)
    assert_same_weights(model.state_dict(), weights)
    ours = create_eval_transform(model)
    theirs = create_transform(**resolve_data_config({}, model=timm.create_model("resnest50d.in1k")))
    official = create_eval_transform("resnest50")  # the authors' protocol: the one the bug gave this copy
    files = sample_photos()
    from PIL import Image

    differs = 0
    for file in files:
        with Image.open(file) as image:
            rgb = image.convert("RGB")
        expected = theirs(rgb)
        assert torch.equal(ours(rgb), expected), file
        differs += int(not torch.equal(official(rgb), expected))
    assert differs == len(files)  # control: the other protocol would have failed on every image
    # The same file passed by its path (as a user copying it from the cache would) is recognised too.
    by_path = create_model("resnest50", pretrained=str(cached), **TINY)
    assert by_path.eval_config == model.eval_config == CHECKPOINTS["resnest50"][1].eval_config


def test_url_without_hash_cut_short_is_retried_and_never_cached(server: WeightServer, tiny: SavedWeights) -> None:
    data = safetensors.torch.save(tiny.state_dict)
    server.files["model.safetensors"] = data
    server.cuts["model.safetensors"] = 1
    model = tiny_model(pretrained=server.url + "model.safetensors")
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert server.requests == ["model.safetensors"] * 2
    (cached,) = cache_dir().iterdir()
    assert cached.read_bytes() == data

    cached.unlink()
    server.cuts["model.safetensors"] = 100
    short = f"transfer cut short: {len(data) // 2:,} of {len(data):,} bytes"
    with pytest.raises(DownloadError, match=short):
        tiny_model(pretrained=server.url + "model.safetensors")
    assert os.listdir(cache_dir()) == []


def test_cached_url_file_that_does_not_load_is_fetched_again_once(server: WeightServer, tiny: SavedWeights) -> None:
    """A truncated file already in the cache (as older versions kept it) is replaced, with a warning."""
    data = safetensors.torch.save(tiny.state_dict)
    server.files["model.safetensors"] = data
    url = server.url + "model.safetensors"
    tiny_model(pretrained=url)
    (cached,) = cache_dir().iterdir()
    cached.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="damaged safetensors file.*fetched again"):
        model = tiny_model(pretrained=url)
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert cached.read_bytes() == data
    assert server.requests == ["model.safetensors"] * 2


def test_hub_copy_cut_short_is_completed_and_checked_against_the_hubs_sha256(
    hub: WeightServer, tiny: SavedWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    from splitattn.weights.sources import timm_hub

    checkpoint = timm_hub("resnest14", "timm/tiny.in1k", 0.875, "bilinear")
    register(monkeypatch, checkpoint)
    data = safetensors.torch.save(tiny.state_dict)
    path = _hub_path(checkpoint.repo)
    hub.files[path] = data
    hub.cuts[path] = 1  # huggingface_hub notices the short body and resumes
    assert_same_weights(create_model("resnest14", pretrained=True, **TINY).state_dict(), tiny.state_dict)
    assert hub.requests == [path, path]
    blob = Path(os.path.realpath(cached_hub_file(checkpoint.repo)))
    assert blob.read_bytes() == data

    # The cached blob damaged afterwards (same length, other bytes): its name is the hub's sha256.
    blob.write_bytes(b"\0" * 64 + data[64:])
    with pytest.warns(UserWarning, match="sha256 is .* but the hub published .*fetched again"):
        model = create_model("resnest14", pretrained=True, **TINY)
    assert_same_weights(model.state_dict(), tiny.state_dict)
    assert blob.read_bytes() == data and hub.requests == [path] * 3


def cached_hub_file(repo: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "model.safetensors")
    assert isinstance(found, str)
    return Path(found)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> List[object]:
    """Every TCP connection attempt (urllib and httpx both open sockets through socket.create_connection)."""
    made: List[object] = []
    connect = socket.create_connection

    def counted(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(address)
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counted)
    return made


def _assert_offline_message(message: str) -> None:
    assert "HF_HUB_OFFLINE=1" in message and "SPLITATTN_WEIGHTS_MIRROR" in message
    assert str(cache_dir()) in message and str(Path(hf_constants.HF_HUB_CACHE)) in message


def test_unreachable_hosts_cost_one_attempt_per_source(
    closed_port: int, attempts: List[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # resnest50: the official file (github.com: name resolution fails) then the hub copy (refused).
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(DownloadError) as error:
        create_model("resnest50", pretrained=True)
    # huggingface_hub's own first request of a process fetches its agent registry from the endpoint it read at
    # import (huggingface.co here), once: not an attempt of ours to fetch weights.
    ours = [address for address in attempts if address != ("huggingface.co", 443)]
    assert ours == [("github.com", 443), ("127.0.0.1", closed_port)]
    assert len(attempts) - len(ours) <= 1
    _assert_offline_message(str(error.value))

    attempts.clear()  # a mirror that refuses: one attempt for each of the two files
    monkeypatch.setenv("SPLITATTN_WEIGHTS_MIRROR", f"http://127.0.0.1:{closed_port}/")
    with pytest.raises(DownloadError, match="cannot connect"):
        create_model("resnest50", pretrained=True)
    assert attempts == [("127.0.0.1", closed_port)] * 2


def test_hf_hub_offline_makes_no_attempt_at_all(attempts: List[object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set") as error:
        create_model("resnest50", pretrained=True)
    assert attempts == []
    _assert_offline_message(str(error.value))
