"""Shared test helpers, and the suite's one policy for real data.

Real data: the shared data sets (``../shared/data`` from the repository root, described in its README.md; the
environment variable ``SPLITATTN_TEST_DATA=DIR`` points the suite at a copy elsewhere) are reached only through
the fixtures ``imagenette_mini``, ``cifar10_mini``, ``coco128`` and ``camvid_mini`` (each the data set's folder,
a ``Path``): a test requests one as an argument, or with ``pytest.mark.usefixtures(...)`` when a module-level
helper builds the paths. Where the data set is absent the test is skipped with a reason naming the path; under
CI (``CI`` set to anything but ``0``/``false``) it fails instead, so CI never passes without running every
real-data test. A test whose claim needs a real photo but not a particular data set uses ``sample_photos()``
(two photos shipped inside scikit-learn, a test dependency), which every clone has. At the end of the session a
line says how many tests ran against the shared data and how many were skipped (or failed) for its absence.
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Dict, List

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPLITATTN_TEST_DATA") or REPO_ROOT.parent / "shared" / "data")
# Each shared data set and a path inside it that a complete copy holds (its README's layout).
DATA_SETS: Dict[str, str] = {
    "imagenette-mini": "val",
    "cifar10-mini": "test",
    "coco128": "annotations/instances.json",
    "camvid-mini": "val/labels",
}
DATA_FIXTURES = {name.replace("-", "_"): name for name in DATA_SETS}
MISSING_DATA = "missing real data:"  # opens every skip/failure reason of an absent data set (counted below)
_REAL_DATA_TESTS = pytest.StashKey[Dict[str, List[str]]]()


def running_in_ci() -> bool:
    """Whether the suite runs under CI: the ``CI`` variable that CI services set, unless ``0``/``false``/``no``."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_data(name: str) -> Path:
    """The folder of the shared data set ``name``; skips the calling test where it is absent, fails it under CI.

    Raises:
        ValueError: ``name`` is not one of the shared data sets.
    """
    if name not in DATA_SETS:
        raise ValueError(f"unknown shared data set {name!r}; the shared data sets are {sorted(DATA_SETS)}")
    folder = SHARED_DATA / name
    if (folder / DATA_SETS[name]).exists():
        return folder
    reason = (
        f"{MISSING_DATA} {name} is not at {folder}: put the shared data sets (small subsets of public data sets, "
        "described in ../shared/data/README.md beside the repository) there, or set SPLITATTN_TEST_DATA=DIR"
    )
    if running_in_ci():
        pytest.fail(f"{reason}; under CI every real-data test must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def imagenette_mini() -> Path:
    """imagenette-mini: 10 ImageNet classes, ImageFolder ``train/`` (200 per class) and ``val/`` (50 per class)."""
    return shared_data("imagenette-mini")


@pytest.fixture(scope="session")
def cifar10_mini() -> Path:
    """cifar10-mini: CIFAR-10 at 32 px, ImageFolder ``train/`` (500 per class) and ``test/`` (100 per class)."""
    return shared_data("cifar10-mini")


@pytest.fixture(scope="session")
def coco128() -> Path:
    """coco128: 128 COCO train2017 images, ``images/*.jpg`` and ``annotations/instances.json``."""
    return shared_data("coco128")


@pytest.fixture(scope="session")
def camvid_mini() -> Path:
    """camvid-mini: CamVid road scenes, ``{train,val}/{images,labels}/*.png``, class ids 0..10 and 11 = void."""
    return shared_data("camvid-mini")


@pytest.fixture(scope="session")
def imagenette_run(imagenette_mini: Path, tmp_path_factory) -> Path:
    """A small classifier trained on imagenette-mini (``task_runs.imagenette_run``): its run folder."""
    from . import task_runs

    return task_runs.imagenette_run(imagenette_mini, tmp_path_factory.mktemp("imagenette-run"))


@pytest.fixture(scope="session")
def detection_run(coco128: Path, tmp_path_factory):
    """A tiny Mask R-CNN run on coco128, its eager scores and its ONNX and OpenVINO files
    (``task_runs.detection_run``)."""
    from . import task_runs

    return task_runs.detection_run(coco128, tmp_path_factory.mktemp("detection-run"))


@pytest.fixture(scope="session")
def faster_rcnn_run(detection_run, tmp_path_factory):
    """``detection_run`` as a Faster R-CNN (its mask head dropped), eager scores and exports
    (``task_runs.faster_rcnn_run``)."""
    from . import task_runs

    return task_runs.faster_rcnn_run(detection_run[0], tmp_path_factory.mktemp("faster-rcnn-run"))


@pytest.fixture(scope="session")
def segmentation_run(camvid_mini: Path, tmp_path_factory):
    """A tiny DeepLabV3 run on camvid-mini, its eager scores and its ONNX and OpenVINO files
    (``task_runs.segmentation_run``)."""
    from . import task_runs

    return task_runs.segmentation_run(tmp_path_factory.mktemp("segmentation-run"))


def sample_photos() -> List[Path]:
    """Two real photos every clone has: scikit-learn's bundled ``china.jpg`` and ``flower.jpg`` (640x427 RGB
    JPEGs without EXIF orientation, CC BY 2.0, see the README.txt beside them)."""
    folder = resources.files("sklearn.datasets") / "images"
    return [Path(str(folder / name)) for name in ("china.jpg", "flower.jpg")]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which selected tests need a shared data set (a data fixture anywhere in their fixture closure)."""
    session.config.stash[_REAL_DATA_TESTS] = {
        item.nodeid: sorted(DATA_FIXTURES[name] for name in getattr(item, "fixturenames", ()) if name in DATA_FIXTURES)
        for item in session.items
        if DATA_FIXTURES.keys() & set(getattr(item, "fixturenames", ()))
    }


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line for CI's log: tests that ran against the shared data, and those its absence skipped or failed."""
    real = config.stash.get(_REAL_DATA_TESTS, {})
    reports = [r for kind in terminalreporter.stats.values() for r in kind if isinstance(r, pytest.TestReport)]
    reports = [r for r in reports if r.nodeid in real]
    ran = {r.nodeid for r in reports if r.when == "call" and not r.skipped}
    missing = {r.nodeid for r in reports if (r.skipped or r.failed) and MISSING_DATA in str(r.longrepr)}
    other = {r.nodeid for r in reports if r.skipped} - missing - ran
    verb = "failed (CI)" if running_in_ci() else "skipped"
    line = (
        f"real data ({SHARED_DATA}): {len(ran)} of {len(real)} tests that need it ran against it, "
        f"{len(missing)} {verb} for missing data, {len(other)} skipped for other reasons"
    )
    terminalreporter.write_sep("-", "real data")
    terminalreporter.write_line(line, red=bool(missing), green=not missing)
    absent = sorted({name for nodeid in missing for name in real[nodeid] if not (SHARED_DATA / name).exists()})
    if absent:
        terminalreporter.write_line(f"absent: {', '.join(absent)} (see the skip reasons above)")


def randomize_state_dict(state: dict, seed: int = 0) -> dict:
    """Fill every float tensor of a ResNet-style state dict with well-scaled random values.

    Conv/linear weights get He-scaled normals, norm gammas U(0.5, 1), the last gamma of each
    block U(0, 0.2) (so deep residual stacks stay finite), betas and running means N(0, 0.1),
    running variances U(0.5, 1). Returns a new dict; the input is not modified.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        shape = value.shape
        if value.dim() >= 2:
            fan_in = value[0].numel()
            new = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        elif key.endswith("running_var"):
            new = torch.rand(shape, generator=gen) * 0.5 + 0.5
        elif key.endswith("bn3.weight"):
            new = torch.rand(shape, generator=gen) * 0.2
        elif key.endswith(".weight"):
            new = torch.rand(shape, generator=gen) * 0.5 + 0.5
        else:
            new = torch.randn(shape, generator=gen) * 0.1
        out[key] = new.to(value.dtype)
    return out


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 when both are all zeros)."""
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (detection steps on a shared 2-core machine are much faster so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
