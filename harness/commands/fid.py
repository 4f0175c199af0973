"""`nfebench fid A B`: FID (and IS, sFID, precision/recall) of A against B, offline.

A and B are each a folder of images, an .npz of uint8 NHWC images (``arr_0``, as ADM
sample batches) or a statistics .npz (ADM reference batch, clean-fid, nfebench). A is the
sample side: IS is computed on A, precision is the share of A inside B's manifold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings

from harness.metrics.preprocess import ADM, MODES


def positive_int(text: str) -> int:
    """argparse type: a positive integer, or a usage error (exit 2) naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_common_arguments(p: argparse.ArgumentParser, metrics: bool = True, batch_size: int | None = 50) -> None:
    """Options shared by `fid`, `ref-stats` and `eval` (`batch_size`: the default, None = required)."""
    p.add_argument("--batch-size", type=positive_int, default=batch_size, required=batch_size is None,
                   help="images per generate/decode/Inception call" if batch_size is None
                   else f"images per Inception call (default {batch_size})")
    p.add_argument("--mode", choices=MODES, default=ADM,
                   help="preprocessing: adm (TF1 bilinear resize, as ADM and torch-fidelity; default) or "
                        "clean (clean-fid's PIL bicubic resize)")
    if metrics:
        p.add_argument("--metrics", default="fid",
                       help="comma-separated subset of fid,is,sfid,pr (pr = precision and recall); default fid")
        p.add_argument("--inception-weights", metavar="PATH",
                       help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth, for IS "
                            "(default: $TORCH_HOME/hub/checkpoints/); never downloaded")
    p.add_argument("--device", default="cpu", help="device of the Inception network (cpu, cuda, cuda:1)")


@contextlib.contextmanager
def caveats_to_stderr(command: str):
    """Print MetricWarnings (few samples, mixed modes) as one plain line each on stderr."""
    from harness.evaluate import MetricWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricWarning)
        yield
    for w in caught:
        if issubclass(w.category, MetricWarning):
            print(f"nfebench {command}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="samples: image folder, image .npz (arr_0) or statistics .npz")
    p.add_argument("b", help="reference: image folder, image .npz, ADM reference batch or statistics .npz")
    add_common_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (key 'fid' holds the FID)")


def run(args: argparse.Namespace) -> int:
    from harness.evaluate import compare_sources, open_source, parse_metrics

    from harness.devices import resolve_device

    metrics = parse_metrics(args.metrics)
    device = str(resolve_device(args.device))
    with caveats_to_stderr("fid"):
        values, skipped, ctx = compare_sources(open_source(args.a), open_source(args.b), metrics=metrics,
                                               mode=args.mode, batch_size=args.batch_size, device=device,
                                               logits_path=args.inception_weights)
    for msg in skipped:
        print(f"nfebench fid: {msg}", file=sys.stderr)
    if args.json:
        out = {v.metric: v.value for v in values}
        out.update({f"{v.metric}_spread": v.spread for v in values if v.spread is not None})
        out.update(n=values[0].n if values else None, mode=ctx["mode"], network=ctx["network"],
                   reference=ctx["reference"], reference_n=ctx["reference_n"], skipped=skipped)
        print(json.dumps(out))
        return 0
    for v in values:
        spread = f" +- {v.spread:.4g}" if v.spread is not None else ""
        print(f"{v.metric:>9}  {v.value:.6g}{spread}")
    n = values[0].n if values else "?"
    print(f"N={n} samples vs {ctx['reference']}; mode {ctx['mode']}; network {ctx['network']}")
    return 0
