"""`nfebench list`: every model id with its ModelInfo (random weights): from each family's infos.json,
or built on the meta device where a family has none."""

from __future__ import annotations

import argparse
import json
import sys

from adapters import get_spec, list_models, model_info
from adapters.api.registry import write_infos


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list of ModelInfo objects")
    p.add_argument("--family", help="only ids of this family")
    p.add_argument("--write-infos", action="store_true",
                   help="rewrite each family's infos.json (the ModelInfo of its ids, which `list` reads instead of "
                        "building every model) from the built models; run it after changing a family's sizes")


def run(args: argparse.Namespace) -> int:
    if args.write_infos:
        for path in write_infos():
            print(f"wrote {path}")
        return 0
    ids = [m for m in list_models() if args.family is None or get_spec(m).family == args.family]
    infos = [model_info(m) for m in ids]
    if args.json:
        print(json.dumps([{**i.to_dict(), "description": get_spec(i.name).description} for i in infos], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="nfebench models")
    for col in ("id", "family", "params", "nfe", "seq. steps", "space", "sample shape", "image", "classes", "GFLOPs"):
        table.add_column(col, justify="right" if col not in ("id", "family", "space") else "left")
    for i in infos:
        table.add_row(i.name, i.family, f"{i.params / 1e6:.1f}M", str(i.nfe), str(i.sequential_steps), i.space,
                      "x".join(map(str, i.sample_shape)), str(i.image_size), str(i.num_classes), f"{i.gflops:.1f}")
    # Piped output has no terminal width; do not squeeze ids into ellipses.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0
