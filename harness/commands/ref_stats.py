"""`nfebench ref-stats SOURCE -o stats.npz`: reference statistics from images.

SOURCE is a folder of images or an image .npz (``arr_0``). The file holds ``mu``/``sigma``
(pool_3, always) and what ``--metrics`` asks for: ``mu_s``/``sigma_s`` (sfid; clean-fid and the
ADM evaluator read these names too), ``mu_dinov2``/``sigma_dinov2`` (fd_dinov2) and the pool_3
vectors that precision/recall, density/coverage and KID need (pr, dc, kid, or
``--with-features``), plus N, the mode and the networks.

Example::

    nfebench ref-stats imagenet-val/ -o ref.npz --metrics fid,sfid,kid,fd_dinov2
"""

from __future__ import annotations

import argparse
import sys

from harness.commands.fid import add_common_arguments, caveats_to_stderr, metric_options

DEFAULT_METRICS = "fid,sfid"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="folder of images or image .npz (arr_0, uint8 NHWC)")
    p.add_argument("-o", "--out", required=True, help="statistics file to write (.npz)")
    add_common_arguments(p, metrics=False, default_metrics=DEFAULT_METRICS)
    p.add_argument("--with-features", action="store_true",
                   help="also store the pool_3 features (N x 2048 float32), as --metrics pr, dc or kid do")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from harness.devices import resolve_device
    from adapters.api.errors import InputError
    from harness.evaluate import ImageFolder, NpzImages, check_count, collect, open_extractors, open_source, \
        parse_metrics
    from harness.metrics.features import extractor_of
    from harness.metrics.fid import save_stats

    if not args.out.endswith(".npz"):
        raise InputError(f"-o {args.out}: the statistics file name must end in .npz")
    # pool_3 always: a statistics file is one with mu and sigma (FID), whatever else it holds.
    metrics = tuple(dict.fromkeys(("fid", *parse_metrics(args.metrics))))
    if "is" in metrics:
        raise InputError("--metrics is: the Inception Score is a property of samples; a reference file has no use "
                         "for it; drop is")
    options = replace(metric_options(args), bootstrap=0)
    source = open_source(args.source)
    if not isinstance(source, (ImageFolder, NpzImages)):
        raise InputError(f"{args.source} already holds statistics; ref-stats needs images")
    with caveats_to_stderr("ref-stats"):
        extractors, plan, skipped = open_extractors(metrics, options, str(resolve_device(args.device)))
        keep = plan.reference_keep | ({"pool"} if args.with_features else frozenset())
        col = collect(source, extractors, plan.stats, keep, args.batch_size, desc="ref-stats")
        check_count(col.count, args.source)  # the same minimum (and small-N warning) as fid and eval
    for msg in skipped:
        print(f"nfebench ref-stats: {msg}", file=sys.stderr)
    networks = {f: extractors[extractor_of(f)].network for f in plan.stats | keep}
    save_stats(args.out, col.stats, mode=args.mode, networks=networks, features={f: col.features(f) for f in keep})
    stored = ", ".join(sorted(plan.stats | {f"{f}_features" for f in keep}))
    print(f"wrote {args.out}: N={col.count}, mode {args.mode}, {stored}; "
          f"{'; '.join(sorted(set(networks.values())))}")
    return 0
