"""FD-DINOv2's features: nfebench's dinov2_vitl14 and EDM2's preprocessing against the hub code.

The reference is facebookresearch/dinov2's own hub function (``dinov2.hub.backbones.dinov2_vitl14``,
code under $NFEBENCH_REFERENCE_DIR/dinov2, never committed) with random, non-zero weights
(LayerScale gammas, biases, norms and tokens perturbed from their constant initial values),
saved in the official layout where torch.hub keeps ``dinov2_vitl14_pretrain.pth``; EDM2's
``DINOv2Detector`` steps (resize mode ``torch``) are composed from torch ops around it.
ViT-L/14 has 304M parameters: a handful of images, one build.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.api.errors import InputError
from harness.metrics import dinov2
from harness.metrics.dinov2 import DINOV2_DIM, DINOv2Features, find_weights
from harness.metrics.features import Unavailable


def hub_vitl14(reference_code):
    """The hub's dinov2_vitl14(pretrained=False). Its builder imports ``..models`` lazily, so the
    reference folder is on sys.path while it runs, and its modules are dropped afterwards."""
    backbones, = reference_code("dinov2", "facebookresearch/dinov2", "dinov2.hub.backbones")
    root, before = str(Path(backbones.__file__).parents[2]), set(sys.modules)  # <root>/dinov2/hub/backbones.py
    sys.path.insert(0, root)
    try:
        model = backbones.dinov2_vitl14(pretrained=False)
    finally:
        sys.path.remove(root)
        for name in set(sys.modules) - before:
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(root):
                del sys.modules[name]
    return model.eval()


def perturb(model, seed=0):
    """Non-zero, non-constant values where the hub initialises constants (gammas 1, biases 0,
    norms 1/0, tokens ~0), at a scale that keeps 24 blocks of activations finite and informative."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(0.2 + 0.1 * noise)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("bias") or name in ("cls_token", "mask_token"):
                p.copy_(0.02 * noise)
            else:
                p.add_(0.005 * noise)


def edm2_features(model, images):
    """EDM2's DINOv2Detector.__call__ with resize_mode='torch', from torch ops."""
    x = torch.nn.functional.interpolate(images.to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
    x = x / 255
    x = x - torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
    x = x / torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)
    with torch.no_grad():
        return model(x)


@pytest.mark.slow
def test_vitl14_and_preprocessing_equal_the_hub_model_and_edm2(reference_code, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = hub_vitl14(reference_code)
    perturb(hub)
    weights = tmp_path / "torch" / "hub" / "checkpoints" / dinov2.WEIGHTS_FILE  # where torch.hub keeps it
    weights.parent.mkdir(parents=True)
    torch.save(hub.state_dict(), weights)
    assert find_weights() == weights

    ours = DINOv2Features.from_options("cpu", type("Options", (), {"dinov2_weights": None})(), frozenset({"dinov2"}))
    assert sum(p.numel() for p in ours.model.parameters()) == sum(p.numel() for p in hub.parameters())
    assert sum(p.numel() for p in hub.parameters()) > 300e6  # ViT-L/14, 304M
    g = torch.Generator().manual_seed(1)
    low = torch.rand(3, 3, 6, 6, generator=g) * 255
    images = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear").round().to(torch.uint8)
    images[2] = torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)  # and one of noise
    got = ours(images)["dinov2"]
    expected = edm2_features(hub, images)
    assert got.shape == expected.shape == (3, DINOV2_DIM)
    scale = expected.abs().max()
    assert float((got - expected).abs().max()) <= 1e-4 * float(scale), float((got - expected).abs().max() / scale)
    assert float((expected[0] - expected[2]).abs().max()) > 0.1 * float(scale)  # images give different features
    # 256 px images (ImageNet's size) go through the same resize.
    big = torch.randint(0, 256, (1, 3, 256, 256), generator=g, dtype=torch.uint8)
    torch.testing.assert_close(ours(big)["dinov2"], edm2_features(hub, big), rtol=0, atol=1e-4 * float(scale))
    # The weights are named in full; random weights are not Meta's, and the warning says so.
    assert ours.sha256 in ours.describe("dinov2") and "no official digest known" in ours.describe("dinov2")
    assert ours.weights_warning and "does not compare with published values" in ours.weights_warning


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert find_weights() is None  # nothing there, and nothing downloaded
    options = type("Options", (), {"dinov2_weights": None})()
    with pytest.raises(Unavailable) as err:
        DINOv2Features.from_options("cpu", options, frozenset({"dinov2"}))
    message = str(err.value)
    expected_place = str(tmp_path / "torch" / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth")
    assert "FD-DINOv2 skipped" in message and expected_place in message and "--dinov2-weights" in message
    with pytest.raises(InputError, match="--dinov2-weights .*nope.pth does not exist"):
        find_weights(tmp_path / "nope.pth")


def test_wrong_weight_files_are_refused_naming_the_tensors(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 768), "head.weight": torch.zeros(2, 2)}, bad)  # a ViT-B file, say
    with pytest.raises(InputError) as err:
        dinov2.load_vitl14(bad)
    message = str(err.value)
    assert "bad.pth is not the state_dict of dinov2_vitl14" in message
    assert "unexpected tensors: head.weight" in message and "cls_token (file (1, 1, 768)" in message
    assert "missing tensors: blocks.0." in message


def test_position_embeddings_are_interpolated_as_the_hub_does():
    """prepare(224) is the hub's interpolate_pos_encoding for a 16 x 16 grid from 37 x 37: bicubic,
    scale factor (16 + 0.1) / 37, so the output is not the plain size=16 resize."""
    torch.manual_seed(0)
    vit = dinov2.VisionTransformer(embed_dim=8, depth=1, num_heads=2, patch_size=14, img_size=518)
    with torch.no_grad():
        vit.pos_embed.normal_()
    vit.prepare(224)
    assert vit._pos.shape == (1, 1 + 16 * 16, 8)
    torch.testing.assert_close(vit._pos[:, 0], vit.pos_embed[:, 0])  # the class position is kept
    grid = vit.pos_embed[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    plain = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 8)
    assert not torch.allclose(vit._pos[:, 1:], plain)  # the 0.1 offset matters
    vit.prepare(518)
    torch.testing.assert_close(vit._pos, vit.pos_embed.detach())
    with pytest.raises(InputError, match="prepared for"):
        vit(torch.zeros(1, 3, 224, 224))


def test_preprocessing_is_edm2s():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 40, 40), dtype=np.uint8))
    x = dinov2.dinov2_input(images)
    expected = torch.nn.functional.interpolate(images.float(), size=(224, 224), mode="bicubic", antialias=True)
    expected = (expected / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
