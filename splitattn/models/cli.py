"""``splitattn models``: the table of registered variants with their size, cost and evaluation protocol."""

from __future__ import annotations

import argparse

from ..errors import NotFoundError
from .complexity import count_macs, count_params
from .factory import create_model
from .registry import MODEL_SPECS, list_models


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the registered models: params, GMACs, evaluation protocol")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnest50*'")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise NotFoundError(f"no model matches {args.pattern!r}; `splitattn models` lists them all.")
    from ..weights.sources import CHECKPOINTS

    header = (
        f"{'name':<26} {'params (M)':>10} {'GMACs':>7} {'input':>5}  {'published':<12} "
        f"{'evaluation per weight source':<38} aliases"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        spec = MODEL_SPECS[name]
        model = create_model(name)
        size = spec.eval_config.input_size
        params, gmacs = count_params(model) / 1e6, count_macs(model, size) / 1e9
        published = ""
        if spec.published_params_m is not None:
            published = f"{spec.published_params_m}M"
            if spec.published_gmacs is not None:
                published += f" {spec.published_gmacs}G"
        sources = CHECKPOINTS.get(name, ())
        protocols = [f"{c.source}: {c.eval_config.describe()}" for c in sources] or [
            f"no weights: {spec.eval_config.describe()}"
        ]
        print(
            f"{name:<26} {params:>10.2f} {gmacs:>7.2f} {size:>5}  {published:<12} {protocols[0]:<38} "
            f"{', '.join(spec.aliases)}"
        )
        for protocol in protocols[1:]:  # further sources, in the order they are tried
            print(f"{'':<65} {protocol}")
    return 0
