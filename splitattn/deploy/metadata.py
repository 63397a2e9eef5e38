"""What an exported file says about itself, stored the standard way of each format; no torch needed.

An exported file carries one flat mapping of keys to JSON values (``describe_metadata`` lists them, the task
export modules fill them):

- ONNX: the model's ``metadata_props`` (``onnx.ModelProto.metadata_props``; ONNX Runtime reads them as
  ``session.get_modelmeta().custom_metadata_map``), each value as JSON text;
- OpenVINO IR: the model's runtime information (``rt_info``, saved in the ``.xml``) under the section
  ``splitattn`` (``model.get_rt_info(["splitattn", key])``), each value as JSON text;
- TorchScript: the archive's extra file ``splitattn.json`` (``torch.jit.load(path, _extra_files=...)``),
  one JSON object.

``read_export_metadata`` reads any of the three (the format told by the file's content, not its name) and adds
``format``. Only ONNX, OpenVINO or the standard library is imported, so the runtimes of
``splitattn.deploy.runtime`` use it in processes without torch.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

from ..deps import openvino_core, require
from ..errors import UsageError

__all__ = [
    "EXPORT_FORMATS",
    "METADATA_VERSION",
    "OPENVINO_SECTION",
    "TORCHSCRIPT_METADATA_FILE",
    "decode_metadata",
    "encode_metadata",
    "file_format",
    "read_export_metadata",
    "read_openvino_metadata",
    "set_openvino_metadata",
    "write_onnx_metadata",
]

PathLike = Union[str, "os.PathLike[str]"]
EXPORT_FORMATS = ("onnx", "torchscript", "openvino")
METADATA_VERSION = 2  # 1: classification only (PR of the first export); 2: every task, ``task`` key
TORCHSCRIPT_METADATA_FILE = "splitattn.json"
OPENVINO_SECTION = "splitattn"


def encode_metadata(metadata: Mapping[str, Any]) -> Dict[str, str]:
    """``{key: JSON text}`` of JSON-serialisable values (what ONNX and OpenVINO store).

    Raises:
        UsageError: a value JSON cannot represent (named with its key).
    """
    encoded = {}
    for key, value in metadata.items():
        try:
            encoded[key] = json.dumps(value)
        except TypeError as error:
            raise UsageError(f"export metadata {key!r} is not JSON-serialisable: {error}") from None
    return encoded


def decode_metadata(stored: Mapping[str, str]) -> Dict[str, Any]:
    """The inverse of ``encode_metadata``: ``{key: value}`` from ``{key: JSON text}``."""
    return {key: json.loads(value) for key, value in stored.items()}


def file_format(path: PathLike) -> str:
    """``onnx``, ``openvino`` or ``torchscript``, told by the file's content: a TorchScript archive is a zip
    file, an OpenVINO IR an XML document (its weights in the ``.bin`` beside it), anything else is read as ONNX
    (a protobuf has no signature).

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {str(path)!r} does not exist; check the path.")
    if zipfile.is_zipfile(path):
        return "torchscript"
    with open(path, "rb") as handle:
        start = handle.read(64).lstrip()
    return "openvino" if start.startswith((b"<?xml", b"<net")) else "onnx"


def write_onnx_metadata(path: PathLike, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` in the ONNX file at ``path`` (``metadata_props``, JSON values), replacing entries of
    the same keys and keeping the others; the file is rewritten through a temporary file and ``os.replace``.

    Raises:
        MissingDependencyError: without the ``onnx`` package.
    """
    onnx = require("onnx", "export", "writing ONNX metadata")
    path = Path(path)
    proto = onnx.load(str(path))
    merged = {prop.key: prop.value for prop in proto.metadata_props}
    merged.update(encode_metadata(metadata))
    del proto.metadata_props[:]
    for key, value in merged.items():
        proto.metadata_props.add(key=key, value=value)
    partial = path.with_name(path.name + ".partial")
    onnx.save(proto, str(partial))
    os.replace(partial, path)


def set_openvino_metadata(model: Any, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` in an ``openvino.Model``'s ``rt_info`` under the ``splitattn`` section (JSON values);
    ``openvino.save_model`` writes it into the ``.xml``."""
    for key, value in encode_metadata(metadata).items():
        model.set_rt_info(value, [OPENVINO_SECTION, key])


def write_openvino_metadata(path: PathLike, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` in the OpenVINO IR at ``path`` (``.xml``; ``rt_info`` section ``splitattn``),
    replacing entries of the same keys and keeping the others; the model is saved to temporary files that
    replace the ``.bin``, then the ``.xml``.

    Raises:
        MissingDependencyError: without ``openvino``.
    """
    openvino = require("openvino", "openvino", "writing OpenVINO metadata")
    path = Path(path)
    model = openvino_core().read_model(str(path))
    set_openvino_metadata(model, metadata)
    partial = path.with_name(path.stem + ".partial.xml")
    openvino.save_model(model, str(partial), compress_to_fp16=False)
    del model
    os.replace(partial.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(partial, path)


def write_metadata(path: PathLike, metadata: Mapping[str, Any]) -> None:
    """Add ``metadata`` to an ONNX file or an OpenVINO IR (told by content; see ``write_onnx_metadata`` and
    ``write_openvino_metadata``).

    Raises:
        UsageError: a TorchScript archive (its metadata is written with the archive).
    """
    fmt = file_format(path)
    if fmt == "torchscript":
        raise UsageError(f"{path}: metadata is added to ONNX and OpenVINO files only, not TorchScript archives.")
    (write_onnx_metadata if fmt == "onnx" else write_openvino_metadata)(path, metadata)


def read_openvino_metadata(model: Any) -> Dict[str, Any]:
    """The ``splitattn`` section of an ``openvino.Model``'s ``rt_info`` (empty when it has none)."""
    if not model.has_rt_info([OPENVINO_SECTION]):
        return {}
    section = model.get_rt_info([OPENVINO_SECTION]).astype(dict)
    return decode_metadata({key: value.astype(str) for key, value in section.items()})


def read_export_metadata(path: PathLike) -> Dict[str, Any]:
    """The metadata of an exported ONNX, OpenVINO (``.xml``) or TorchScript file, plus ``format``.

    ONNX files are read with ``onnx`` when it is installed, else with ONNX Runtime; OpenVINO files with
    ``openvino``; TorchScript archives with ``zipfile`` (no torch needed).

    Raises:
        FileNotFoundError: no file at ``path``.
        UsageError: the file carries no splitattn metadata (not written by ``splitattn export``).
        MissingDependencyError: the package that reads the format is not installed.
    """
    fmt = file_format(path)
    if fmt == "torchscript":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.split("/", 1)[-1] == f"extra/{TORCHSCRIPT_METADATA_FILE}"]
            metadata = json.loads(archive.read(names[0])) if names else {}
    elif fmt == "openvino":
        require("openvino", "openvino", "reading an OpenVINO file")
        metadata = read_openvino_metadata(openvino_core().read_model(str(path)))
    else:
        metadata = _read_onnx_metadata(path)
    if "model_name" not in metadata:
        raise UsageError(
            f"{str(path)!r} carries no splitattn export metadata; export it again with `splitattn export`."
        )
    return {**metadata, "format": fmt}


def _read_onnx_metadata(path: PathLike) -> Dict[str, Any]:
    try:
        import onnx
    except ImportError:  # a serving machine with ONNX Runtime only
        onnxruntime = require("onnxruntime", "export", "reading an ONNX file")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return decode_metadata(session.get_modelmeta().custom_metadata_map)
    proto = onnx.load(str(path), load_external_data=False)
    return decode_metadata({prop.key: prop.value for prop in proto.metadata_props})
