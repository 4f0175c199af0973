"""`nfebench eval`: sample N images from a model, measure FID (IS, sFID, precision/recall)
against a reference, and write one results row per metric to a run file.

Example::

    nfebench eval --model rf-b2 --checkpoint rf-b2.pt --num-samples 50000 \\
        --ref VIRTUAL_imagenet256_labeled.npz --batch-size 64 --seed 0 --metrics fid,is,sfid,pr \\
        --save-samples samples.npz --out results/runs/rf-b2-fid50k.csv
"""

from __future__ import annotations

import argparse
import sys

from harness.commands.fid import add_common_arguments, caveats_to_stderr
from harness.errors import InputError

_DTYPES = ("float32", "float16", "bfloat16", "float64")


def parse_overrides(text: str | None) -> dict:
    """``"num_blocks=2,nvp=false,noise_std=0.1,vae=none"`` -> {"num_blocks": 2, "nvp": False, ...}."""
    out: dict = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected key=value")
        low = raw.lower()
        if low in ("true", "false"):
            value = low == "true"
        elif low == "none":
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        out[key.strip()] = value
    return out


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
    add_common_arguments(p, batch_size=None)
    p.add_argument("--save-samples", metavar="PATH.npz", help="also write the samples as an ADM sample batch")
    p.add_argument("--out", required=True, help="run file (CSV) the metric rows are added to")


def run(args: argparse.Namespace) -> int:
    import torch

    from adapters import load_sampler
    from harness.evaluate import evaluate_sampler, open_source, parse_metrics
    from harness.results import RunFile
    from harness.sampler import weights_with_decoder
    from harness.devices import device_name, resolve_device

    # Every check on the arguments before any sampling: a bad --out must not cost hours.
    metrics = parse_metrics(args.metrics)
    overrides = parse_overrides(args.overrides)
    reference = open_source(args.ref)
    device = resolve_device(args.device)
    run_file = RunFile(args.out, append=True)
    if args.save_samples and not args.save_samples.endswith(".npz"):
        raise InputError(f"--save-samples {args.save_samples}: the file name must end in .npz")
    sampler = load_sampler(args.model, checkpoint=args.checkpoint, device=device,
                           dtype=getattr(torch, args.dtype), **overrides)
    with caveats_to_stderr("eval"):
        values, skipped, ctx = evaluate_sampler(
            sampler, reference, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
            guidance=args.guidance, metrics=metrics, mode=args.mode, device=str(device),
            logits_path=args.inception_weights, save_samples=args.save_samples)
    for msg in skipped:
        print(f"nfebench eval: {msg}", file=sys.stderr)
    info = sampler.info
    weights = weights_with_decoder(info.weights, getattr(sampler, "decoder_weights", None))
    config = {"reference": ctx["reference"], "reference_n": ctx["reference_n"], "mode": ctx["mode"],
              "network": ctx["network"], "quantization": ctx["quantization"], **overrides}
    for v in values:
        notes = f"{v.metric} of N={v.n} samples vs {ctx['reference']} ({ctx['mode']} mode, {ctx['network']})"
        run_file.add(model=info.name, family=info.family, params=info.params, nfe=info.nfe, backend="torch",
                     device=device.type, device_name=device_name(device), dtype=args.dtype, compiled=False,
                     batch_size=args.batch_size, decode="on", guidance=args.guidance, seed=args.seed,
                     weights=weights, metric=v.metric, value=v.value, spread=v.spread, n=v.n,
                     notes=f"{notes}; {v.notes}" if v.notes else notes, config=config)
        print(f"{v.metric:>9}  {v.value:.6g}  (N={v.n})")
    print(f"wrote {len(values)} row(s) to {args.out}")
    return 0
