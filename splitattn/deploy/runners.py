"""One classifier in every form a user would deploy it on a CPU: the runners of ``splitattn benchmark``.

Each runner takes float32 (N, C, H, W) images (the model's preprocessing already applied) and returns float32
logits, and is built for one batch size, as a server would run it (compiled runners compile for that shape;
``pad_batch`` keeps it). The runners, by name:

=======================  =============================================================================================
``eager``                our model, eager, float32: the reference every row is checked against
``fast-fp32|bf16``       ``optimize_for_inference(backend="compile")``: BatchNorm folded, channels_last, Inductor freezing
``fast-openvino-*``      ``optimize_for_inference(backend="openvino")``: the folded model in OpenVINO (what ``auto``
                         picks for fp32 on a CPU where OpenVINO is installed)
``aot-fp32|bf16``        the same compiled ahead of time into an AOTInductor package (``backend="aot"``)
``timm-compile-fp32|…``  timm's model with our weights, channels_last, ``torch.compile`` with Inductor freezing: what a
                         timm user gets with one line (classification's anchor; the same compiled code as ours)
``onnxruntime-fp32``     our ONNX export (``export_onnx``) in ONNX Runtime (graph optimisation level all)
``openvino-fp32|bf16``   the same ONNX file in OpenVINO, its inference precision hint fp32 or bf16
``int8-onnxruntime``     NNCF's int8 QDQ file (``deploy.quantize.quantize_onnx``, the ``export --int8`` file) in
                         ONNX Runtime
``int8-openvino``        the same int8 file in OpenVINO (NNCF's quantisation, OpenVINO's int8 kernels)
``int8-fast``            PT2E ``X86InductorQuantizer`` behind our fast path (``optimize_for_inference("int8")``)
=======================  =============================================================================================

Threads: every runtime gets the same intra-op thread count. Waiting: ``spinning=False`` makes ONNX Runtime's
threads sleep between operators (``session.intra_op.allow_spinning=0``), as ``OMP_WAIT_POLICY=PASSIVE`` does
for torch's OpenMP threads: on a machine with more runnable threads than cores a spinning thread burns the
time slice its sibling needs, which made eager torch at 2 threads 10-50x slower on the shared 2-core CPU
this project is measured on.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from ..deps import openvino_core, require
from ..errors import DeviceError, UsageError
from ..models.registry import get_model_spec
from ..optimize.compiled import compile_frozen, freezing_trace
from ..optimize.inference import cpu_supports_bf16, optimize_for_inference

RUNNERS = (
    "eager",
    "fast-fp32",
    "fast-bf16",
    "fast-openvino-fp32",
    "fast-openvino-bf16",
    "aot-fp32",
    "aot-bf16",
    "timm-compile-fp32",
    "timm-compile-bf16",
    "onnxruntime-fp32",
    "openvino-fp32",
    "openvino-bf16",
    "int8-onnxruntime",
    "int8-openvino",
    "int8-fast",
)
# what `splitattn benchmark` runs without --runners: every runner with a counterpart a user would pick
DEFAULT_RUNNERS = tuple(name for name in RUNNERS if not name.startswith("aot-"))
Call = Callable[[Tensor], Tensor]


@dataclass
class Runner:
    """A built runner: ``name``, the ``precision`` whose CPU rate it is judged against (fp32, bf16, int8), and
    ``call``: float32 (N, C, H, W) images -> float32 logits, at the batch size it was built for."""

    name: str
    precision: str
    call: Call


def runner_precision(name: str) -> str:
    """``int8``, ``bf16`` or ``fp32``: the arithmetic a runner does (``eager`` is fp32)."""
    if name.startswith("int8"):
        return "int8"
    return "bf16" if name.endswith("bf16") else "fp32"


def check_runner_names(names: List[str], has_timm_twin: bool) -> List[str]:
    """``names`` checked against ``RUNNERS`` (and bf16 against the CPU); ``eager`` first, added when missing.

    Raises:
        UsageError: an unknown runner, or ``timm-compile`` for a model timm does not have.
        DeviceError: a bf16 runner on a CPU without bf16 instructions.
    """
    unknown = [name for name in names if name not in RUNNERS]
    if unknown:
        raise UsageError(f"Unknown runner {', '.join(unknown)}; choose from {', '.join(RUNNERS)}.")
    if any(name.startswith("timm-") for name in names) and not has_timm_twin:
        raise UsageError("timm has no counterpart of this model; drop the timm-compile runners.")
    if any(name.endswith("bf16") for name in names) and not cpu_supports_bf16():
        raise DeviceError("this CPU has no bf16 instructions (AVX-512 BF16 / AMX); drop the bf16 runners.")
    return ["eager"] + [name for name in dict.fromkeys(names) if name != "eager"]


def _no_grad(model: nn.Module) -> Call:
    def call(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return model(x)

    return call


class RunnerFactory:
    """Builds the runners of one model, sharing what they have in common (the ONNX file, its int8 version).

    Args:
        model: the float32 eager classifier (eval mode); not modified.
        model_name: its registered name (for timm's counterpart).
        img_size: the benchmark's image size (exports are checked at it).
        calibration: preprocessed training images (N, C, H, W) for the int8 runners.
        threads: intra-op threads of every runtime.
        spinning: let ONNX Runtime's threads busy-wait between operators (see the module doc).
        folder: where the exported files go (default: a new temporary folder).
    """

    def __init__(
        self,
        model: nn.Module,
        model_name: str,
        img_size: int,
        calibration: Tensor,
        threads: int,
        spinning: bool = False,
        folder: Optional[Path] = None,
    ) -> None:
        self.model = model.eval()
        self.model_name = model_name
        self.img_size = img_size
        self.calibration = calibration
        self.threads = threads
        self.spinning = spinning
        self.folder = Path(folder or tempfile.mkdtemp(prefix="splitattn-benchmark-"))
        self._files: Dict[str, Path] = {}

    def build(self, name: str, batch: int) -> Runner:
        """The runner ``name`` (one of ``RUNNERS``) for batches of ``batch`` images."""
        precision = runner_precision(name)
        if name == "eager":
            return Runner(name, precision, _no_grad(self.model))
        if name.startswith(("fast-", "aot-")):
            backend = "aot" if name.startswith("aot-") else "openvino" if "-openvino-" in name else "compile"
            fast = optimize_for_inference(
                self.model, precision, backend=backend, example_size=self.img_size, pad_batch=batch
            )
            return Runner(name, precision, fast)
        if name == "int8-fast":
            fast = optimize_for_inference(self.model, "int8", calibration=self.calibration, pad_batch=batch)
            return Runner(name, precision, fast)
        if name.startswith("timm-compile-"):
            return Runner(name, precision, self._timm_compiled(precision))
        if name == "onnxruntime-fp32":
            return Runner(name, precision, self.onnxruntime_call(self._fp32_onnx()))
        if name.startswith("openvino-"):
            return Runner(name, precision, self._openvino(self._fp32_onnx(), precision))
        if name == "int8-onnxruntime":
            return Runner(name, precision, self.onnxruntime_call(self._int8_onnx()))
        if name == "int8-openvino":
            return Runner(name, precision, self._openvino(self._int8_onnx(), "fp32"))
        raise UsageError(f"Unknown runner {name!r}; choose from {', '.join(RUNNERS)}.")

    def _timm_compiled(self, precision: str) -> Call:
        import timm

        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        twin = timm.create_model(get_model_spec(self.model_name).timm_name, num_classes=self.model.num_classes)
        twin.load_state_dict(self.model.state_dict())
        twin = copy.deepcopy(twin).eval().to(dtype=dtype, memory_format=torch.channels_last)
        compiled = compile_frozen(twin)  # the same chance as ours: Inductor freezing, its own compiled code

        def call(x: Tensor) -> Tensor:
            with torch.inference_mode(), freezing_trace():
                return compiled(x.to(dtype=dtype, memory_format=torch.channels_last)).float()

        return call

    def _fp32_onnx(self) -> Path:
        if "fp32" not in self._files:
            from .export import export_onnx

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's deprecation notes; the file is checked below
                self._files["fp32"] = export_onnx(self.model, self.folder / "fp32.onnx", self.img_size)
        return self._files["fp32"]

    def _int8_onnx(self) -> Path:
        if "int8" not in self._files:
            from .quantize import quantize_onnx

            samples = [image[None].numpy() for image in self.calibration]
            self._files["int8"] = quantize_onnx(self._fp32_onnx(), self.folder / "int8.onnx", samples)
        return self._files["int8"]

    def onnxruntime_call(self, path: Path) -> Call:
        """A call running the ONNX file ``path`` in ONNX Runtime with this factory's threads and waiting."""
        onnxruntime = require("onnxruntime", "export", "the ONNX Runtime benchmark runners")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    def _openvino(self, path: Path, precision: str) -> Call:
        require("openvino", "openvino", "the OpenVINO benchmark runners")
        core = openvino_core()
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": hint,
        }
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()
        return lambda x: torch.from_numpy(request.infer({0: x.numpy()})[0].copy())


def timm_twin_exists(model_name: str) -> bool:
    """Whether timm has the same architecture (``timm-compile`` runners can load our weights into it)."""
    return get_model_spec(model_name).timm_name is not None
