"""`nfebench fid A B`: FID (and IS, sFID, precision/recall, density/coverage, KID, FD-DINOv2)
of A against B, offline, with 95% bootstrap intervals for FID, FD-DINOv2 and KID.

A and B are each a folder of images, an .npz of uint8 NHWC images (``arr_0``, as ADM
sample batches) or a statistics .npz (ADM reference batch, clean-fid, nfebench). A is the
sample side: IS is computed on A, precision is the share of A inside B's manifold, KID and
the intervals resample A.

Example::

    nfebench fid samples.npz VIRTUAL_imagenet256_labeled.npz --metrics fid,kid,fd_dinov2 --json
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


def add_common_arguments(p: argparse.ArgumentParser, metrics: bool = True, batch_size: int | None = 50,
                         default_metrics: str = "fid") -> None:
    """Options shared by `fid`, `ref-stats` and `eval` (`batch_size`: the default, None = required)."""
    from harness.metrics.bootstrap import BOOTSTRAP_REPLICATES
    from harness.metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS

    p.add_argument("--batch-size", type=positive_int, default=batch_size, required=batch_size is None,
                   help="images per generate/decode/network call" if batch_size is None
                   else f"images per network call (default {batch_size})")
    p.add_argument("--mode", choices=MODES, default=ADM,
                   help="Inception preprocessing: adm (TF1 bilinear resize, as ADM and torch-fidelity; default) or "
                        "clean (clean-fid's PIL bicubic resize); FD-DINOv2 always uses EDM2's")
    p.add_argument("--metrics", default=default_metrics,
                   help="comma-separated subset of fid,is,sfid,pr,dc,kid,fd_dinov2 (pr = precision and recall, "
                        f"dc = density and coverage); default {default_metrics}")
    if metrics:
        p.add_argument("--inception-weights", metavar="PATH",
                       help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth, for IS "
                            "(default: $TORCH_HOME/hub/checkpoints/); never downloaded")
        p.add_argument("--kid-subsets", type=positive_int, default=KID_SUBSETS,
                       help=f"KID: number of subset pairs (default {KID_SUBSETS}, as torch-fidelity)")
        p.add_argument("--kid-subset-size", type=positive_int, default=KID_SUBSET_SIZE,
                       help=f"KID: vectors per subset, capped at the smaller set (default {KID_SUBSET_SIZE})")
        p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_REPLICATES, metavar="B",
                       help=f"replicates (random halves of the samples) for the 95%% intervals of fid, fd_dinov2 "
                            f"and kid (default {BOOTSTRAP_REPLICATES}; 0: no intervals)")
    p.add_argument("--dinov2-weights", metavar="PATH",
                   help="Meta's dinov2_vitl14_pretrain.pth, for fd_dinov2 (default: $TORCH_HOME/hub/checkpoints/); "
                        "never downloaded")
    p.add_argument("--device", default="cpu", help="device of the networks (cpu, cuda, cuda:1)")


def metric_options(args: argparse.Namespace):
    """The `harness.evaluate.MetricOptions` of parsed arguments (checked)."""
    from harness.evaluate import MetricOptions

    defaults = MetricOptions()
    return MetricOptions(mode=args.mode, kid_subsets=getattr(args, "kid_subsets", defaults.kid_subsets),
                         kid_subset_size=getattr(args, "kid_subset_size", defaults.kid_subset_size),
                         bootstrap=getattr(args, "bootstrap", defaults.bootstrap),
                         inception_weights=getattr(args, "inception_weights", None),
                         dinov2_weights=args.dinov2_weights).check()


def values_json(values, skipped: list[str], ctx: dict) -> dict:
    """The ``--json`` object of `fid` and `eval`: each metric's value (KID as ``{"mean", "std"}``),
    its spread and 95% interval (``<metric>_ci_low``, ``<metric>_ci_high``), and the network and
    weights behind each number (``networks``)."""
    from harness.results import KID

    out: dict = {}
    for v in values:
        if v.metric == KID:
            out[v.metric] = {"mean": v.value, "std": v.spread}
        else:
            out[v.metric] = v.value
            if v.spread is not None:
                out[f"{v.metric}_spread"] = v.spread
        if v.ci_low is not None:
            out[f"{v.metric}_ci_low"], out[f"{v.metric}_ci_high"] = v.ci_low, v.ci_high
    out.update(n=values[0].n if values else None, mode=ctx["mode"], network=ctx["network"],
               networks={v.metric: v.network for v in values}, notes={v.metric: v.notes for v in values if v.notes},
               reference=ctx["reference"], reference_n=ctx["reference_n"], skipped=skipped)
    return out


def value_line(v) -> str:
    """One metric as the commands print it: value, spread, interval."""
    spread = f" +- {v.spread:.4g}" if v.spread is not None else ""
    ci = f"  95% [{v.ci_low:.6g}, {v.ci_high:.6g}]" if v.ci_low is not None else ""
    return f"{v.metric:>9}  {v.value:.6g}{spread}{ci}"


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
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: 'fid' holds the FID, 'fid_ci_low'/'fid_ci_high' its interval, "
                        "'kid' {'mean', 'std'}, 'networks' the network and weights behind each number")


def run(args: argparse.Namespace) -> int:
    from harness.devices import resolve_device
    from harness.evaluate import compare_sources, open_source, parse_metrics

    metrics = parse_metrics(args.metrics)
    options = metric_options(args)
    device = str(resolve_device(args.device))
    with caveats_to_stderr("fid"):
        values, skipped, ctx = compare_sources(open_source(args.a), open_source(args.b), metrics=metrics,
                                               options=options, batch_size=args.batch_size, device=device)
    for msg in skipped:
        print(f"nfebench fid: {msg}", file=sys.stderr)
    if args.json:
        print(json.dumps(values_json(values, skipped, ctx)))
        return 0
    for v in values:
        print(value_line(v))
    n = values[0].n if values else "?"
    print(f"N={n} samples vs {ctx['reference']}; mode {ctx['mode']}")
    for v in values:
        print(f"{v.metric}: {v.network}" + (f"; {v.notes}" if v.notes else ""))
    return 0
