"""Inception feature extraction, images/s: nfebench against clean-fid and torch-fidelity.

All pipelines see the same uint8 images, in memory (no file reading), on the same device,
with the same batch size, after a warm-up batch each (TorchScript optimises on its first calls):

- ``nfebench adm``: TF1 bilinear resize + the shipped TorchScript Inception, pool_3 (and IS
  logits when the torch-fidelity weight file is present); ``+ sFID features`` also returns
  the mixed_6/conv features (layer by layer). On the CPU the network runs in channels-last.
- ``nfebench clean``: clean-fid's PIL bicubic resize + the same network.
- ``clean-fid clean``: clean-fid's own resizer and its ``InceptionV3W`` (pool_3 only) reading
  ``/tmp/inception-2015-12-05.pt``, written from the shipped network if absent.
- ``torch-fidelity resize + same net``: torch-fidelity's resize and normalisation followed by
  the shipped network (pool_3 only), in its own NCHW layout; the script prints the largest
  pool_3 difference from ``nfebench adm``. torch-fidelity's own network needs its weight file
  ``weights-inception-2015-12-05-6726825d.pth``; when that file is present,
  ``torch-fidelity own net`` times its ``FeatureExtractorInceptionV3`` too. Without it, this
  row is the fair stand-in: the same preprocessing, the same network weights.

    python benchmarks/feature_speed.py [--images 32] [--batch-size 16] [--size 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from throughput import images_per_s


def make_images(n: int, size: int) -> np.ndarray:
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="input image side (resized to 299)")
    p.add_argument("--rounds", type=int, default=3,
                   help="each pipeline is timed once per round, rounds interleaved; the best round counts "
                        "(a shared machine's load then hits all pipelines alike)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)

    from cleanfid.features import build_feature_extractor
    from cleanfid.resize import build_resizer
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    from harness.metrics.inception import InceptionFeatures, find_logits_file, load_network

    cleanfid_path = "/tmp/inception-2015-12-05.pt"
    if not os.path.exists(cleanfid_path):
        tmp = f"/tmp/.inception-{os.getpid()}.pt"
        torch.jit.save(load_network(), tmp)
        os.replace(tmp, cleanfid_path)

    logits = find_logits_file()
    ours = InceptionFeatures(device, logits_path=logits)
    ours_clean = InceptionFeatures(device, mode="clean")
    pool = {"pool"} | ({"logits"} if logits is not None else set())
    net = load_network(None, str(device))
    cf_model = build_feature_extractor("clean", device, use_dataparallel=False)
    cf_resize = build_resizer("clean")

    def cleanfid_clean(batch):
        x = torch.from_numpy(np.stack([cf_resize(img) for img in batch])).permute(0, 3, 1, 2)
        with torch.no_grad():
            return cf_model(x.to(device))

    def fidelity_same_net(batch):
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device, torch.float32)
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        with torch.no_grad():
            return net((x - 128) / 128)

    pipelines = {
        "nfebench adm": lambda b: ours(b, pool),
        "nfebench adm + sFID features": lambda b: ours(b, pool | {"spatial"}),
        "torch-fidelity resize + same net": fidelity_same_net,
        "nfebench clean": lambda b: ours_clean(b, {"pool"}),
        "clean-fid clean": cleanfid_clean,
    }
    if logits is not None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        tf_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                             feature_extractor_weights_path=str(logits)).to(device)

        def fidelity_own(batch):
            with torch.no_grad():
                return tf_net(torch.from_numpy(batch).permute(0, 3, 1, 2).to(device))

        pipelines["torch-fidelity own net"] = fidelity_own
    else:
        print("torch-fidelity's own network skipped: weight file not found (see --help)")

    images = make_images(args.images, args.size)
    for fn in pipelines.values():
        fn(images[:args.batch_size])  # warm-up
    rates = {name: 0.0 for name in pipelines}
    for _ in range(args.rounds):
        for name, fn in pipelines.items():
            rates[name] = max(rates[name], images_per_s(fn, images, args.batch_size, device))
    print(f"{args.images} images {args.size}x{args.size}, batch {args.batch_size}, device {device}, "
          f"best of {args.rounds} interleaved rounds")
    for name, rate in rates.items():
        print(f"{name:<34} {rate:8.2f} images/s")
    print(f"ratio nfebench adm / torch-fidelity resize + same net: "
          f"{rates['nfebench adm'] / rates['torch-fidelity resize + same net']:.2f}")
    print(f"ratio nfebench clean / clean-fid clean: {rates['nfebench clean'] / rates['clean-fid clean']:.2f}")
    same = images[:args.batch_size]
    diff = (ours(same, {"pool"})["pool"] - fidelity_same_net(same)).abs().max()
    print(f"largest pool_3 difference, nfebench adm - torch-fidelity resize + same net: {float(diff):.1e}")
    if "torch-fidelity own net" in rates:
        print(f"ratio nfebench adm / torch-fidelity own net: "
              f"{rates['nfebench adm'] / rates['torch-fidelity own net']:.2f}")


if __name__ == "__main__":
    main()
