"""DINOv2 feature extraction, images/s: nfebench's FD-DINOv2 features against EDM2's detector.

Both pipelines see the same uint8 images, in memory, on the same device, with the same batch
size and the same (random) dinov2_vitl14 weights, after a warm-up batch each:

- ``EDM2 DINOv2Detector``: facebookresearch/dinov2's hub model (``dinov2.hub.backbones.dinov2_vitl14``,
  from the reference checkout given by ``--reference``, never committed) behind EDM2's
  ``resize_mode='torch'`` steps: bicubic antialiased resize to 224, / 255, ImageNet mean/std.
  Its position embeddings are interpolated from 37 x 37 to 16 x 16 on every call.
- ``nfebench DINOv2Features``: `harness.metrics.dinov2` with the same weights (position
  embeddings interpolated once, when the weights are loaded).

Each pipeline is timed once per round, rounds interleaved (alternating which goes first), the
best round counting. The script
prints images/s, the ratio, and the largest feature difference between the two.

    python benchmarks/dinov2_speed.py [--images 8] [--batch-size 4] [--size 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from throughput import images_per_s


def hub_model(root: Path):
    sys.path.insert(0, str(root))
    try:
        from dinov2.hub.backbones import dinov2_vitl14

        return dinov2_vitl14(pretrained=False).eval().requires_grad_(False)
    finally:
        sys.path.remove(str(root))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="input image side (resized to 224)")
    p.add_argument("--rounds", type=int, default=3)
    reference = Path(os.environ.get("NFEBENCH_REFERENCE_DIR", "/tmp/ref")) / "dinov2"
    p.add_argument("--reference", type=Path, default=reference, help="a checkout of github:facebookresearch/dinov2")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)

    from harness.metrics.dinov2 import INPUT_SIZE, VITL14, DINOv2Features, VisionTransformer

    hub = hub_model(args.reference)
    torch.manual_seed(0)
    with torch.no_grad():  # non-constant gammas and tokens, as trained weights have
        for name, prm in hub.named_parameters():
            if name.endswith("gamma") or name in ("cls_token", "mask_token"):
                prm.copy_(0.1 + 0.05 * torch.randn(prm.shape))
    vit = VisionTransformer(**VITL14)
    vit.load_state_dict(hub.state_dict(), strict=True)
    vit.prepare(INPUT_SIZE)
    ours = DINOv2Features.__new__(DINOv2Features)  # the extractor around these weights, without a file
    ours.device, ours.model = device, vit.to(device).eval().requires_grad_(False)
    hub = hub.to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).reshape(1, -1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).reshape(1, -1, 1, 1)

    def edm2(batch):  # EDM2 calculate_metrics.py DINOv2Detector.__call__, resize_mode='torch'
        x = torch.nn.functional.interpolate(batch.to(device, torch.float32), size=(224, 224), mode="bicubic",
                                            antialias=True)
        x = (x.to(torch.float32) / 255 - mean) / std
        return hub(x)

    def nfebench(batch):
        return ours.extract(batch, frozenset({"dinov2"}))["dinov2"]

    g = torch.Generator().manual_seed(0)
    low = torch.rand(args.images, 3, 8, 8, generator=g) * 255
    images = torch.nn.functional.interpolate(low, size=(args.size, args.size), mode="bicubic").clamp(0, 255)
    images = images.round().to(torch.uint8).to(device)  # (N, 3, S, S)
    pipelines = {"EDM2 DINOv2Detector": edm2, "nfebench DINOv2Features": nfebench}
    with torch.no_grad():
        for fn in pipelines.values():
            fn(images[:args.batch_size])  # warm-up
        diff = float((edm2(images[:args.batch_size]) - nfebench(images[:args.batch_size])).abs().max())
        scale = float(edm2(images[:args.batch_size]).abs().max())
        rates = {name: 0.0 for name in pipelines}
        for r in range(args.rounds):
            order = list(pipelines.items())
            for name, fn in order if r % 2 == 0 else order[::-1]:  # alternate who goes first: drift hits both
                rates[name] = max(rates[name], images_per_s(fn, images, args.batch_size, device))
    print(f"{args.images} images {args.size}x{args.size}, batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads, best of {args.rounds} interleaved rounds")
    for name, rate in rates.items():
        print(f"{name:<26} {rate:8.3f} images/s")
    print(f"ratio nfebench / EDM2: {rates['nfebench DINOv2Features'] / rates['EDM2 DINOv2Detector']:.3f}")
    print(f"largest feature difference {diff:.3g} (features up to {scale:.3g})")


if __name__ == "__main__":
    main()
