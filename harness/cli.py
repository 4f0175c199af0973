"""`nfebench` command line: thin. Each subcommand lives in `harness.commands.<module>` with
`add_arguments(parser)` and `run(args) -> int`, imported only when it is the one asked for.

Exit status: 0 success, 1 a failure while running (or a regression, for `regress`),
2 bad input (an `InputError`: unknown model, bad argument, unreadable file).
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from harness import __version__
from adapters.api.errors import InputError

# name -> (module, one-line help). Lazy: `nfebench --help` imports no network code.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("harness.commands.listing", "list registered model ids with their ModelInfo"),
    "bench": ("harness.commands.bench", "time models and their settings over batch sizes, with and without decode, "
                                        "each fast setting quality-checked (run file + pyperf JSON)"),
    "fid": ("harness.commands.fid", "FID (and IS, sFID, precision/recall, density/coverage, KID, FD-DINOv2) between "
                                    "two image sets or statistics"),
    "ref-stats": ("harness.commands.ref_stats", "reference statistics (.npz) from a folder of images or an image .npz"),
    "eval": ("harness.commands.eval", "sample a model, measure FID/IS/sFID/precision/recall/density/coverage/KID/"
                                      "FD-DINOv2, write rows to a run file"),
    "sweep": ("harness.commands.sweep", "measure a grid of settings per model (steps, guidance, decodings) for quality "
                                        "and for time in one resumable run (run file + pyperf JSON)"),
    "leaderboard": ("harness.commands.leaderboard", "regenerate results/leaderboard*.{csv,md} (board, mini track, frontier, budgets, optima) and the plots"),
    "regress": ("harness.commands.regress", "compare a run file with a baseline; exit 1 on a regression"),
    "track": ("harness.commands.track", "train (where missing), evaluate and time a track's small models: track mini"),
    "docs": ("harness.commands.docs", "regenerate the README's and docs/'s tables from the committed results"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nfebench", description="Benchmark and evaluate image generators through one sampler interface.")
    parser.add_argument("--version", action="version", version=f"nfebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)  # exits 2 itself on malformed arguments
    try:
        return int(import_module(COMMANDS[args.command][0]).run(args) or 0)
    except InputError as exc:
        print(f"nfebench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nfebench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
