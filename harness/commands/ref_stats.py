"""`nfebench ref-stats SOURCE -o stats.npz`: reference statistics from images.

SOURCE is a folder of images or an image .npz (``arr_0``). The file holds ``mu``/``sigma``
(pool_3) and ``mu_s``/``sigma_s`` (sFID), so clean-fid and the ADM evaluator read it too,
plus N, the mode and the network; ``--with-features`` adds the pool_3 vectors that
precision/recall needs.
"""

from __future__ import annotations

import argparse

from harness.commands.fid import add_common_arguments, caveats_to_stderr


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="folder of images or image .npz (arr_0, uint8 NHWC)")
    p.add_argument("-o", "--out", required=True, help="statistics file to write (.npz)")
    add_common_arguments(p, metrics=False)
    p.add_argument("--with-features", action="store_true",
                   help="also store the pool_3 features (N x 2048 float32), for precision/recall")


def run(args: argparse.Namespace) -> int:
    from harness.devices import resolve_device
    from harness.errors import InputError
    from harness.evaluate import ImageFolder, NpzImages, check_count, collect, open_source
    from harness.metrics.fid import save_stats
    from harness.metrics.inception import InceptionFeatures

    if not args.out.endswith(".npz"):
        raise InputError(f"-o {args.out}: the statistics file name must end in .npz")
    source = open_source(args.source)
    if not isinstance(source, (ImageFolder, NpzImages)):
        raise InputError(f"{args.source} already holds statistics; ref-stats needs images")
    extractor = InceptionFeatures(str(resolve_device(args.device)))
    col = collect(source, extractor, ("fid", "sfid"), args.mode, args.batch_size,
                  keep_features=args.with_features, desc="ref-stats")
    with caveats_to_stderr("ref-stats"):
        check_count(col.count, args.source)  # the same minimum (and small-N warning) as fid and eval
    save_stats(args.out, col.pool, col.spatial, mode=args.mode, network=extractor.network,
               pool_features=col.features())
    print(f"wrote {args.out}: N={col.count}, mode {args.mode}, network {extractor.network}")
    return 0
