"""`nfebench eval`: sample N images from a model, measure FID (IS, sFID, precision/recall,
density/coverage, KID, FD-DINOv2) against a reference, and write one results row per metric
to a run file, with the 95% bootstrap interval of FID, FD-DINOv2 and KID in ``ci_low``/``ci_high``.

A sampler that makes NaN or Inf stops the run with a one-line error (exit 2) and no rows.

Runs as one process, under ``torchrun`` (one process per GPU) or as a JAX multi-process
job (`harness.distributed`); only rank 0 writes rows. With ``--work-dir`` a killed run
resumes where it stopped (`harness.workdir`).

Example::

    nfebench eval --model sit-b2 --checkpoint sit-b2.pt --num-samples 50000 \\
        --ref VIRTUAL_imagenet256_labeled.npz --batch-size 64 --seed 0 --metrics fid,is,sfid,pr \\
        --save-samples samples.npz --work-dir runs/sit-b2-fid50k --out results/runs/sit-b2-fid50k.csv
    torchrun --standalone --nproc_per_node=8 -m harness.cli eval ...   # the same, on 8 GPUs
"""

from __future__ import annotations

import argparse
import sys

from harness.commands.fid import add_common_arguments, caveats_to_stderr, metric_options, positive_int, value_line
from adapters.api.errors import InputError
from harness.workdir import DEFAULT_SHARD_SIZE

_DTYPES = ("float32", "float16", "bfloat16", "float64")


def parse_overrides(text: str | None) -> dict:
    """``"num_blocks=2,nvp=false,noise_std=0.1,vae=none"`` -> {"num_blocks": 2, "nvp": False, ...}
    (`harness.settings.parse_pairs`, the syntax bench's ``--set`` uses too)."""
    from harness.settings import parse_pairs

    return parse_pairs(text, "--set") if text else {}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model id (see nfebench list)")
    p.add_argument("--checkpoint", help="state_dict file; without it the weights are random (rows say so)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE,...",
                   help="config overrides passed to load_sampler, e.g. num_blocks=2,channels=64")
    p.add_argument("--num-samples", type=int, required=True, help="N (50000 for FID-50K)")
    p.add_argument("--ref", required=True,
                   help="reference: ADM reference batch, statistics .npz, image .npz or image folder")
    p.add_argument("--seed", type=int, required=True, help="sample i uses noise and label from (seed, i)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--dtype", choices=_DTYPES, default="float32", help="generator dtype (default float32)")
    p.add_argument("--backend", choices=("torch", "jax"), default="torch",
                   help="generator back-end: torch (on --device), or jax (the Flax port with the same weights, on "
                        "JAX's default platform and all its local devices; features still run in torch on --device)")
    add_common_arguments(p, batch_size=None)
    p.add_argument("--save-samples", metavar="PATH.npz", help="also write the samples as an ADM sample batch")
    p.add_argument("--work-dir", metavar="DIR",
                   help="keep finished shards here: rerunning the same command resumes, a finished run is "
                        "reported without work, other settings are refused (default: a temporary folder)")
    p.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE,
                   help=f"samples per shard, the unit of work per process and of resumption "
                        f"(default {DEFAULT_SHARD_SIZE}; part of the result's settings)")
    p.add_argument("--out", required=True, help="run file (CSV) the metric rows are added to")


def run(args: argparse.Namespace) -> int:
    import torch

    from adapters import load_sampler
    from harness.devices import device_name, resolve_device
    from harness.distributed import RankFailed, distributed_world, run_checked
    from harness.evaluate import evaluate_sampler, open_source, parse_metrics
    from harness.results import KID, RunFile
    from adapters.api.sampler import weights_with_decoder
    from harness.settings import nfe_of

    # Every check on the arguments before any sampling: a bad --out must not cost hours.
    metrics = parse_metrics(args.metrics)
    options = metric_options(args)
    overrides = parse_overrides(args.overrides)
    reference = open_source(args.ref)
    if args.save_samples and not args.save_samples.endswith(".npz"):
        raise InputError(f"--save-samples {args.save_samples}: the file name must end in .npz")
    try:
        with distributed_world(resolve_device(args.device)) as (world, device):
            rank = world.rank
            # Every step that can fail on one rank only is checked on all (run_checked).
            run_file = run_checked(world, lambda: RunFile(args.out, append=True) if world.is_root else None)
            if args.backend == "jax":
                sampler = run_checked(world, lambda: load_sampler(args.model, checkpoint=args.checkpoint,
                                                                  backend="jax", device="auto", dtype=args.dtype,
                                                                  **overrides))
            else:
                sampler = run_checked(world, lambda: load_sampler(args.model, checkpoint=args.checkpoint,
                                                                  device=device, dtype=getattr(torch, args.dtype),
                                                                  **overrides))
            with caveats_to_stderr("eval"):
                values, skipped, ctx = evaluate_sampler(
                    sampler, reference, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                    guidance=args.guidance, metrics=metrics, options=options, device=str(device),
                    save_samples=args.save_samples, work_dir=args.work_dir,
                    shard_size=args.shard_size, world=world,
                    settings={"overrides": overrides, "backend": args.backend})
    except RankFailed as exc:  # this rank was fine; rank 0 shows the failing rank's traceback
        if rank == 0:
            print(f"nfebench eval: traceback of the failed rank:\n{exc.trace}", file=sys.stderr, end="")
        print(f"nfebench eval: error (rank {rank}): {exc}", file=sys.stderr)
        return 1
    if rank != 0:
        return 0
    for msg in skipped:
        print(f"nfebench eval: {msg}", file=sys.stderr)
    if ctx.get("reused"):
        print(f"nfebench eval: {args.work_dir} holds a finished run with these settings; its metrics are "
              f"reported again, nothing was recomputed", file=sys.stderr)
    info = sampler.info
    if args.backend == "jax":
        from adapters.api.devices import jax_device_name

        gen_device, gen_device_name = sampler.devices[0].platform, jax_device_name(sampler.devices[0])
    else:
        gen_device, gen_device_name = device.type, device_name(device)
    weights = weights_with_decoder(info.weights, getattr(sampler, "decoder_weights", None))
    nfe = nfe_of(args.model, guidance=args.guidance, **overrides)  # of what ran: --guidance, not the config's default
    # World size and shard size go to the notes, not `config`: regress pairs rows on config,
    # and neither changes the numbers (shard size at float64 rounding only).
    config = {"reference": ctx["reference"], "reference_n": ctx["reference_n"], "mode": ctx["mode"],
              "network": ctx["network"], "quantization": ctx["quantization"], **overrides}
    for v in values:
        notes = (f"{v.metric} of N={v.n} samples vs {ctx['reference']} ({ctx['mode']} mode, {v.network}); "
                 f"{ctx['world_size']} process(es), shards of {ctx['shard_size']}")
        # The network behind this number (DINOv2's for fd_dinov2), so rows of other weights never pair.
        row_config = {**config, "network": ctx["extractor_networks"].get(v.extractor, ctx["network"])}
        if v.metric == KID:
            row_config.update(kid_subsets=options.kid_subsets, kid_subset_size=options.kid_subset_size)
        run_file.add(model=info.name, family=info.family, params=info.params, nfe=nfe, backend=args.backend,
                     device=gen_device, device_name=gen_device_name, dtype=args.dtype,
                     compiled=args.backend == "jax",
                     batch_size=args.batch_size, decode="on", guidance=args.guidance, seed=args.seed,
                     weights=weights, metric=v.metric, value=v.value, spread=v.spread, n=v.n,
                     ci_low=v.ci_low, ci_high=v.ci_high,
                     notes=f"{notes}; {v.notes}" if v.notes else notes, config=row_config)
        print(f"{value_line(v)}  (N={v.n})")
    print(f"wrote {len(values)} row(s) to {args.out}")
    return 0
