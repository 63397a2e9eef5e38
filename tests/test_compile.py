"""No process-wide side effects: what ``import splitattn`` loads, and the scope of
``compile_for_training``'s activation memory budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._functorch.config as functorch_config

from splitattn.cli import main
from splitattn.optimize.training import compile_for_training

from .train_helpers import REPO, TINY_MODEL, child_env, make_image_folder

HEAVY_MODULES = (
    "torchvision",  # it loads Dynamo and Inductor
    "torch._inductor",
    "torch._dynamo",
    "matplotlib",
    "tensorboard",
    "torch.utils.tensorboard",
    "pycocotools",
    "onnx",
    "onnxruntime",
)


def test_import_loads_the_model_library_only():
    code = f"import sys, json, splitattn; print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_memory_budget_applies_to_its_own_compile_and_is_restored():
    seen = []

    def recording_backend(graph_module, example_inputs):  # called while the graph compiles
        seen.append(functorch_config.activation_memory_budget)
        return graph_module.forward

    torch._dynamo.reset()
    before = functorch_config.activation_memory_budget
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    compiled = compile_for_training(model, 0.3, backend=recording_backend)
    assert functorch_config.activation_memory_budget == before  # nothing set before the first call
    compiled(torch.randn(3, 4)).sum().backward()
    assert seen == [0.3]
    assert functorch_config.activation_memory_budget == before
    compiled(torch.randn(5, 4, 4)).sum().backward()  # a new shape recompiles under the same budget
    assert seen[-1] == 0.3 and functorch_config.activation_memory_budget == before
    with pytest.raises(ValueError, match=r"memory_budget must be in \(0, 1\]"):
        compile_for_training(model, 0.0)


@pytest.mark.slow
def test_train_compile_option_compiles_and_leaves_the_budget(tmp_path: Path):
    """``splitattn train --compile --memory-budget``: the step goes through Dynamo, the budget does not leak."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    before = functorch_config.activation_memory_budget
    graphs = counters["stats"]["unique_graphs"]
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--output",
                str(tmp_path / "run"),
                *TINY_MODEL,
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--workers",
                "0",
                "--no-progress",
                "--compile",
                "--memory-budget",
                "0.6",
            ]
        )
        == 0
    )
    assert counters["stats"]["unique_graphs"] > graphs, "--compile trained without compiling"
    assert functorch_config.activation_memory_budget == before
    assert (tmp_path / "run" / "last.pt").is_file()
