"""The README's Deploy section as a user runs it (issue 18): from a trained run of each task to an int8 file served
from Python with only NumPy, Pillow and ONNX Runtime or OpenVINO.

The section's command lines run exactly as written, from a folder laid out as the README assumes (``runs/...``
holding this session's small runs of each task, ``examples/`` and ``../shared/data``): first its
``splitattn export ... --int8`` lines (default calibration and metric gate), then its
``python3 examples/serve_exported.py`` lines in a Python where ``torch``, ``torchvision`` and ``splitattn``
cannot be imported. What the script prints must be what splitattn's own runtime (``deploy.runtime``) predicts
from the same file: the same top-3 classes and probabilities, the same detections, and a label map whose class
shares agree within 2 points (the script resizes with Pillow, the runtime as torch does).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from splitattn.deploy.runtime import load_exported

from .conftest import REPO_ROOT, SHARED_DATA
from .docs_snippets import blocks, shell_lines
from .train_helpers import child_env

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytestmark = pytest.mark.slow

README = REPO_ROOT / "README.md"
BLOCKED = ("torch", "torchvision", "splitattn", "timm", "nncf")


def deploy_lines() -> List[List[str]]:
    """The command lines of the README's "## Deploy" section, in order (``pip install`` lines left out)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Deploy") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("## "))
    found = []
    for block in blocks(README):
        if block.language == "bash" and start < block.line <= end:
            found += [tokens for _, tokens in shell_lines(block) if "pip" not in tokens]
    return found


@pytest.fixture(scope="module")
def served(imagenette_run, segmentation_run, detection_run, tmp_path_factory) -> Dict[str, str]:
    """Run the section in a fresh folder; ``{model file: what serve_exported.py printed}``."""
    root = tmp_path_factory.mktemp("readme-deploy")
    work = root / "work"
    (work / "runs").mkdir(parents=True)
    (root / "shared").symlink_to(SHARED_DATA.parent)
    (work / "examples").symlink_to(REPO_ROOT / "examples")
    for name, run in (("imagenette", imagenette_run), ("camvid", segmentation_run[0]), ("coco128", detection_run[0])):
        (work / "runs" / name).symlink_to(run)
    blocker = root / "no-torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None  # as on a machine without it\n" for name in BLOCKED)
    )
    serving_env = {**child_env(2), "PYTHONPATH": str(blocker)}
    lines = deploy_lines()
    exports = [tokens for tokens in lines if tokens[0] == "splitattn"]
    serving = [tokens for tokens in lines if tokens[:2] == ["python3", "examples/serve_exported.py"]]
    assert len(exports) == 3 and len(serving) == 3 and len(lines) == 6, lines
    printed = {}
    for tokens in exports + serving:
        if tokens[0] == "splitattn":
            command, env = [sys.executable, "-m", "splitattn", *tokens[1:]], child_env(2)
        else:
            command, env = [sys.executable, *tokens[1:]], serving_env
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(tokens)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if tokens[0] == "python3":
            printed[tokens[2]] = done.stdout
    return {str(work / name): out for name, out in printed.items()}, work


def _file(served, suffix: str):
    outputs, work = served
    path = next(name for name in outputs if name.endswith(suffix))
    return Path(path), outputs[path], work


def _image(work: Path, out: str) -> Image.Image:
    name = out.splitlines()[-1].split(" ")[0].rstrip(":")
    return Image.open(work / name).convert("RGB")


def test_the_classifier_serves_the_runtimes_top_3(served):
    path, out, work = _file(served, "imagenette-int8.onnx")
    assert out.startswith(f"{path.relative_to(work)}: int8, top1 ")
    expected = load_exported(path).predict(_image(work, out))
    classes = load_exported(path).classes
    top = [(classes[i], f"{100 * expected[i]:.1f}%") for i in expected.argsort()[::-1][:3]]
    got = re.findall(r"(n\d+) ([\d.]+%)", out.splitlines()[-1])
    assert got == top, (out, top)


def test_the_segmenter_serves_the_runtimes_label_map(served):
    path, out, work = _file(served, "camvid-int8.onnx")
    assert "int8, mIoU" in out
    runtime = load_exported(path)
    labels = runtime.predict(_image(work, out), scales=[1.0], flip=False, crop_size=None)
    shares = np.bincount(labels.ravel(), minlength=len(runtime.classes)) / labels.size
    got = dict((name, float(share) / 100) for name, share in re.findall(r"([a-z/]+) ([\d.]+)%", out.splitlines()[-1]))
    assert got, out
    for index, name in enumerate(runtime.classes):
        assert abs(got.get(name, 0.0) - shares[index]) <= 0.02, (name, got, shares)


def test_the_detector_serves_the_runtimes_detections(served):
    path, out, work = _file(served, "coco128-int8.xml")
    assert "int8, bbox AP" in out
    runtime = load_exported(path)
    expected = runtime.predict(_image(work, out))
    assert len(expected["scores"]) >= 1, "the overfit run finds its training image's objects"
    line = out.splitlines()[-1]
    assert int(re.search(r": (\d+) objects", line).group(1)) == len(expected["scores"])
    found = re.findall(r"([a-z ]+) ([\d.]+) \[([-\d., ]+)\]", line.split(" objects ", 1)[-1])
    assert len(found) == len(expected["scores"])
    for (name, score, box), label, expected_score, expected_box in zip(
        found, expected["labels"], expected["scores"], expected["boxes"]
    ):
        assert name.strip(" ;") == runtime.classes[label]
        assert float(score) == pytest.approx(float(expected_score), abs=0.006)
        assert np.allclose([float(v) for v in box.split(",")], expected_box, atol=0.06)
