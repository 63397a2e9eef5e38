"""Shared pieces of the weights tests: an isolated cache, a local HTTP server, small real checkpoints.

Nothing here reaches the internet: ``isolated`` makes every name other than 127.0.0.1 fail
to resolve, and the server listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import pytest
import torch
from huggingface_hub import constants as hf_constants
from torch import Tensor

from splitattn import create_model
from splitattn.weights import CHECKPOINTS, Checkpoint, download
from splitattn.weights.sources import official

# resnest14's structure at 1/8 of its widths: a real model whose checkpoint is ~20 MB, quick to write and serve.
TINY = {"stem_width": 8, "bottleneck_width": 8}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private caches (ours, torch's, the Hugging Face hub's), no mirror, the real hub endpoint (unreachable:
    see below), no retry waits, and no name resolution beyond 127.0.0.1."""
    monkeypatch.setenv("SPLITATTN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SPLITATTN_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read at import from HF_HOME
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)
    resolve = socket.getaddrinfo

    def local_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(f"the tests may not reach {host}")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    return tmp_path / "home" / "checkpoints"


class WeightServer:
    """``http.server`` on 127.0.0.1 in a thread, serving ``files`` (name -> bytes) at ``url``.

    ``cuts[name] = n`` makes the next ``n`` responses for ``name`` announce the full
    Content-Length, send half the bytes and close the connection. Names in the Hugging Face
    hub's layout (``{repo}/resolve/{revision}/{file}``) are answered as the hub does: HEAD
    requests and the commit and ETag headers that ``huggingface_hub`` reads. ``requests``
    lists the names of GET requests.
    """

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.cuts: Dict[str, int] = {}
        self.requests: List[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> Optional[bytes]:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                data = owner.files.get(name)
                if data is None:
                    self.send_error(404)
                    return None
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                if "/resolve/" in name:
                    self.send_header("X-Repo-Commit", hashlib.sha1(name.encode()).hexdigest())
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.end_headers()
                return data

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(self.path.lstrip("/"))
                data = self.do_HEAD()
                if data is None:
                    return
                name = self.path.lstrip("/")
                if owner.cuts.get(name, 0) > 0:
                    owner.cuts[name] -= 1
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def server() -> WeightServer:
    weights_server = WeightServer()
    yield weights_server
    weights_server.stop()


@dataclass(frozen=True)
class SavedWeights:
    state_dict: Dict[str, Tensor]
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def tiny_model(**kwargs: object) -> torch.nn.Module:
    return create_model("resnest14", **TINY, **kwargs)


@pytest.fixture(scope="session")
def tiny() -> SavedWeights:
    """A tiny model's weights, randomised (BN statistics too) so they differ from any fresh model."""
    torch.manual_seed(0)
    state_dict = tiny_model().state_dict()
    for value in state_dict.values():
        if value.is_floating_point():
            value.copy_(torch.randn_like(value))
    return SavedWeights(state_dict, torch_bytes(state_dict))


def register(monkeypatch: pytest.MonkeyPatch, *checkpoints: Checkpoint) -> None:
    """Make ``checkpoints`` the sources of their model for this test."""
    monkeypatch.setitem(CHECKPOINTS, checkpoints[0].model, checkpoints)


def register_official(monkeypatch: pytest.MonkeyPatch, data: bytes, model: str = "resnest14") -> Checkpoint:
    """Register ``data`` as an official-style file ``{model}-{its real sha256[:8]}.pth``."""
    checkpoint = official(model, hashlib.sha256(data).hexdigest()[:8])
    register(monkeypatch, checkpoint)
    return checkpoint


def assert_same_weights(actual: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key
