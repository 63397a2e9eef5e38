"""``splitattn weights``: list, download, verify and convert checkpoint files."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

from ..errors import NotFoundError
from ..models.factory import create_model
from ..models.registry import MODEL_SPECS, get_model_spec, list_models
from .download import cache_dir, checkpoint_url, fetch_checkpoint, fetch_pretrained
from .files import check_sha256, sha256_file
from .hub_fetch import hub_sha256
from .loading import CheckpointMismatchError, fit_state_dict, load_checkpoint, save_state_dict
from .sources import CHECKPOINTS, Checkpoint, checkpoints_for, find_checkpoint, hash_from_name


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="pretrained weights: list, download, verify, convert")
    commands = parser.add_subparsers(dest="weights_command", metavar="ACTION")
    commands.required = True

    listing = commands.add_parser("list", help="every published checkpoint: source, hash, size, cached or not")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style model filter, e.g. 'resnest50*'")
    listing.set_defaults(func=run_list)

    download = commands.add_parser("download", help="fetch a model's weights into the cache and verify them")
    download.add_argument("name", help="model name or timm alias")
    download.add_argument(
        "--source",
        choices=sorted({c.source for s in CHECKPOINTS.values() for c in s}),
        help="fetch this source (default: the first available)",
    )
    download.set_defaults(func=run_download)

    verify = commands.add_parser("verify", help="check a file: safe to load, hash, keys and shapes of a model")
    verify.add_argument("file", type=Path)
    verify.add_argument("--model", help="model to check against (default: from the registry or the file's shapes)")
    verify.add_argument("--key", help="entry of a training checkpoint holding the weights, e.g. model_ema")
    verify.set_defaults(func=run_verify)

    convert = commands.add_parser("convert", help="rewrite a checkpoint as bare weights: .pth <-> .safetensors")
    convert.add_argument("input", type=Path)
    convert.add_argument("output", type=Path, help="*.safetensors, or *.pth/*.pt/*.bin for torch.save")
    convert.add_argument("--key", help="entry of a training checkpoint holding the weights, e.g. model_ema")
    convert.set_defaults(func=run_convert)


def _meta_model(name: str, num_classes: int = 1000, in_chans: int = 3) -> torch.nn.Module:
    """A model with shapes but no storage: cheap to build even for ResNeSt-269."""
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes, in_chans=in_chans)


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MB"


def run_list(args: argparse.Namespace) -> int:
    names = [n for n in list_models(args.pattern) if n in CHECKPOINTS]
    if not names:
        raise NotFoundError(
            f"no model with weights matches {args.pattern!r}; models with weights: {', '.join(CHECKPOINTS)}."
        )
    print(f"cache: {cache_dir()}")
    header = f"{'model':<24} {'source':<9} {'sha256':<9} {'size':>11}  {'cached':<6} file"
    print(header)
    print("-" * len(header))
    for name in names:
        model_bytes = sum(t.numel() * t.element_size() for t in _meta_model(name).state_dict().values())
        for checkpoint in CHECKPOINTS[name]:
            path = cache_dir() / checkpoint.filename
            cached = path.is_file()
            size = _mb(path.stat().st_size) if cached else "~" + _mb(model_bytes)
            print(
                f"{name:<24} {checkpoint.source:<9} {checkpoint.sha256 or 'none':<9} {size:>11}  "
                f"{'yes' if cached else 'no':<6} {checkpoint.filename}"
            )
    print(
        "sha256 'none': no hash is registered for the timm hub copies; a download is checked against the sha256 the "
        "hub serves with it, and every copy by a strict key/shape load."
    )
    return 0


def _check_against(name: str, state_dict: Mapping[str, Tensor], origin: str) -> None:
    """Strict key/shape check of weights against ``name``, with the checkpoint's classifier and input size."""
    fc = state_dict.get("fc.weight")
    stem = state_dict.get("conv1.0.weight", state_dict.get("conv1.weight"))
    model = _meta_model(
        name,
        num_classes=fc.shape[0] if fc is not None else 0,
        in_chans=stem.shape[1] if stem is not None and stem.dim() == 4 else 3,
    )
    fit_state_dict(model, state_dict, origin)


def _describe(checkpoint: Checkpoint, path: Path, digest: str) -> str:
    if checkpoint.sha256:
        return f"sha256 {digest} matches the published prefix {checkpoint.sha256}"
    if hub_sha256(path) == digest:
        return f"sha256 {digest} matches the hub's (the file's LFS ETag)"
    return f"sha256 {digest} (none published for {checkpoint.source}: checked by keys and shapes only)"


def run_download(args: argparse.Namespace) -> int:
    spec = get_model_spec(args.name)
    if args.source:
        chosen = [c for c in checkpoints_for(spec.name) if c.source == args.source]
        if not chosen:
            raise NotFoundError(
                f"{spec.name} has no {args.source} checkpoint; `splitattn weights list` shows its sources."
            )
        checkpoint, path = chosen[0], fetch_checkpoint(chosen[0])
    else:
        path, checkpoint = fetch_pretrained(spec.name)
    _check_against(spec.name, load_checkpoint(path), str(path))
    print(
        f"{path}\n  from {checkpoint_url(checkpoint)}\n  {_describe(checkpoint, path, sha256_file(path))}\n"
        f"  keys and shapes match {spec.name}"
    )
    return 0


def _stage_depths(state_dict: Mapping[str, Tensor]) -> List[int]:
    depths: Dict[int, int] = {}
    for key in state_dict:
        match = re.match(r"layer(\d)\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    return [depths.get(stage, 0) for stage in range(1, 5)]


def _matching_models(state_dict: Mapping[str, Tensor], origin: str) -> List[str]:
    """Registered models the weights fit exactly (only those with the same blocks per stage are built)."""
    depths = _stage_depths(state_dict)
    matches = []
    for name, spec in MODEL_SPECS.items():
        if list(spec.arch["layers"]) != depths:
            continue
        try:
            _check_against(name, state_dict, origin)
        except CheckpointMismatchError:
            continue
        matches.append(name)
    return matches


def run_verify(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    registered = find_checkpoint(path.name)
    expected: Optional[str] = registered.sha256 if registered else hash_from_name(path.name)
    digest = check_sha256(path, expected)  # a mismatch raises; verify never deletes
    print(f"{path}\n  sha256 {digest}: " + (f"matches {expected}" if expected else "no hash registered or in the name"))
    state_dict = load_checkpoint(path, args.key)
    params = sum(t.numel() for k, t in state_dict.items() if not k.endswith("num_batches_tracked"))
    print(f"  loads safely: {len(state_dict)} tensors, {params / 1e6:.2f}M values")
    name = args.model or (registered.model if registered else None)
    if name:
        _check_against(get_model_spec(name).name, state_dict, str(path))
        print(f"  keys and shapes match {get_model_spec(name).name}")
        return 0
    matches = _matching_models(state_dict, str(path))
    if not matches:
        print("  matches no registered model exactly; pass --model NAME to see the differences")
        return 1
    print(f"  keys and shapes match: {', '.join(matches)}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    state_dict = load_checkpoint(args.input, args.key)
    out = save_state_dict(state_dict, args.output)
    print(f"{out}: {len(state_dict)} tensors, {_mb(out.stat().st_size)}, sha256 {sha256_file(out)}")
    return 0
