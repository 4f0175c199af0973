"""DINOv2 ViT-L/14 features for FD-DINOv2, as NVlabs/edm2 computes them, from local weights only.

EDM2's ``calculate_metrics.py`` (``DINOv2Detector``, resize mode ``torch``) loads
``dinov2_vitl14`` from facebookresearch/dinov2's torch.hub code and feeds it uint8 images
through ``interpolate(x.float(), (224, 224), mode="bicubic", antialias=True)``, then ``/ 255``
and the ImageNet mean/std; the feature is the model's output, the class token after the final
LayerNorm (1024 values). FD-DINOv2 is the Frechet distance of those features' Gaussians.

The network is written here (`VisionTransformer`) with the hub model's parameter names, so
Meta's ``dinov2_vitl14_pretrain.pth`` loads strictly; tests hold it to the hub code. The hub
model is built for 518 px (37 x 37 positions) and interpolates its position embeddings to the
input's 16 x 16 grid on every call (bicubic, with DINOv2's historical 0.1 offset in the scale
factor); here that is done once, with the same call, when the weights are loaded.

Weights: ``--dinov2-weights PATH`` or ``$TORCH_HOME/hub/checkpoints/dinov2_vitl14_pretrain.pth``
(where ``torch.hub`` keeps the file). Never downloaded; without the file FD-DINOv2 is skipped
with a message saying where to put it. Meta publishes no digest of the file (no hash in its
URL or in the dinov2 repository), so none is enforced. The file's sha256 goes into every
row; independent downloads of Meta's release record sha256 `RECORDED_SHA256` and 1,217,586,395
bytes (three Hugging Face mirrors and several projects' manifests), and a file that differs
from it is used with a warning that its numbers will not compare with published ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adapters.api.errors import InputError
from harness.metrics.features import FeatureExtractor, Unavailable, hub_checkpoint
from harness.results import file_digest

WEIGHTS_FILE = "dinov2_vitl14_pretrain.pth"
RECORDED_SHA256 = "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428"
RECORDED_SIZE = 1_217_586_395
DINOV2_DIM = 1024
INPUT_SIZE = 224  # EDM2's resize target
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# dinov2_vitl14 as the hub builds it (hub/backbones.py + models/vision_transformer.py vit_large)
VITL14 = dict(embed_dim=1024, depth=24, num_heads=16, patch_size=14, img_size=518)
INTERPOLATE_OFFSET = 0.1  # the hub's interpolate_offset for dinov2_vitl14


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, T, D)


class VisionTransformer(nn.Module):
    """The DINOv2 backbone (no registers, MLP FFN): class token after the final norm.

    Parameter names are the hub model's (``cls_token``, ``pos_embed``, ``mask_token``,
    ``patch_embed.proj``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,
    ls2.gamma}``, ``norm``), so its released state_dict loads strictly. ``mask_token`` is only
    used in training and kept so that it does.

    Example::

        vit = VisionTransformer(**VITL14)            # dinov2_vitl14's shapes, weights uninitialised
        vit.load_state_dict(torch.load("dinov2_vitl14_pretrain.pth"))
        vit.prepare(224)
        cls = vit(torch.zeros(2, 3, 224, 224))       # (2, 1024)
    """

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, patch_size: int, img_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size  # positions the embedding was trained for, per side
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.register_buffer("_pos", torch.zeros(0), persistent=False)  # set by prepare()

    @torch.no_grad()
    def prepare(self, size: int) -> None:
        """Interpolate the position embeddings to a `size` x `size` input once, as the hub model's
        ``interpolate_pos_encoding`` does on each call: float32, bicubic without antialiasing,
        scale factor (side + 0.1) / grid."""
        side = size // self.patch_size
        pos = self.pos_embed.float()  # (1, 1 + G*G, D)
        if side == self.grid:
            self._pos = pos.to(self.pos_embed.dtype)
            return
        dim, g = pos.shape[-1], self.grid
        patch = pos[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)  # (1, D, G, G)
        scale = (side + INTERPOLATE_OFFSET) / g
        patch = nn.functional.interpolate(patch, scale_factor=(scale, scale), mode="bicubic", antialias=False)
        if tuple(patch.shape[-2:]) != (side, side):
            raise InputError(f"position embeddings interpolated to {tuple(patch.shape[-2:])}, expected {side}x{side}")
        patch = patch.permute(0, 2, 3, 1).reshape(1, side * side, dim)  # (1, S*S, D)
        self._pos = torch.cat([pos[:, :1], patch], dim=1).to(self.pos_embed.dtype)  # (1, 1 + S*S, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) with S the size given to `prepare` -> (B, D)."""
        tokens = self.patch_embed(x)  # (B, T, D)
        if self._pos.shape[1] != tokens.shape[1] + 1:
            raise InputError(f"the network was prepared for {self._pos.shape[1] - 1} patches, got {tokens.shape[1]}; "
                             f"call prepare({x.shape[-1]})")
        h = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self._pos  # (B, 1 + T, D)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)[:, 0]  # (B, D)


def find_weights(explicit: str | Path | None = None) -> Path | None:
    """``dinov2_vitl14_pretrain.pth``: `explicit` (must exist), else the torch.hub checkpoint
    folder (``$TORCH_HOME/hub/checkpoints/``) if it is there, else None."""
    return hub_checkpoint(WEIGHTS_FILE, explicit, "--dinov2-weights")


def weights_missing_message() -> str:
    """Why FD-DINOv2 was skipped, and how to enable it."""
    where = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    return (f"FD-DINOv2 skipped: it needs Meta's DINOv2 ViT-L/14 weights {WEIGHTS_FILE} (1.2 GB, "
            f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/{WEIGHTS_FILE}), not found at {where}; place "
            f"the file there or pass --dinov2-weights PATH (nfebench never downloads it)")


def load_vitl14(path: str | Path, device: str | torch.device = "cpu") -> VisionTransformer:
    """dinov2_vitl14 with the weights of `path` (the hub's state_dict layout), prepared for 224 px,
    in eval mode on `device`. Every missing, unexpected or mis-shaped tensor is named."""
    from adapters.api.checkpoint import check_fits, read_state_dict

    sd = read_state_dict(path)
    with torch.device("meta"):
        model = VisionTransformer(**VITL14)
    try:
        check_fits(model, sd, f"DINOv2 weights {path}")
    except InputError as exc:
        raise InputError(f"{path} is not the state_dict of dinov2_vitl14 (ViT-L/14, no registers) that "
                         f"{WEIGHTS_FILE} holds: {exc}") from exc
    model.load_state_dict(sd, strict=True, assign=True)
    model.prepare(INPUT_SIZE)
    return model.to(device).eval().requires_grad_(False)


def dinov2_input(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 (N, 3, 224, 224), EDM2's ``torch`` resize mode: bicubic with
    antialiasing (not clipped, as EDM2), / 255, then the ImageNet mean and std.

    Example::

        x = dinov2_input(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))   # (2, 3, 224, 224)
    """
    x = images.to(device, torch.float32)  # (N, 3, H, W) in [0, 255]
    x = nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


class DINOv2Features(FeatureExtractor):
    """The 1024-d DINOv2 ViT-L/14 feature of EDM2's FD-DINOv2.

    Example::

        dino = DINOv2Features("cpu", weights_path="dinov2_vitl14_pretrain.pth")
        dino(torch.zeros(2, 3, 256, 256, dtype=torch.uint8))["dinov2"].shape   # (2, 1024)
        dino.weights_warning      # None, or why the file's numbers may not compare with published ones
    """

    NAME = "dinov2"
    FEATURES = {"dinov2": DINOV2_DIM}

    def __init__(self, device: str | torch.device = "cpu", *, weights_path: str | Path):
        self.device = torch.device(device)
        path = Path(weights_path)
        self.sha256 = file_digest(path, "sha256")
        self.model = load_vitl14(path, self.device)
        self.network = f"dinov2_vitl14 ({path.name} sha256:{self.sha256[:12]})"
        self.weights_warning = None
        if self.sha256 == RECORDED_SHA256:
            self.verified = "equals the sha256 recorded for Meta's release (Meta publishes no official digest)"
        else:
            self.verified = "no official digest known; differs from the sha256 recorded for Meta's release"
            self.weights_warning = (f"DINOv2 weights {path} have sha256 {self.sha256[:16]}..., not the "
                                    f"{RECORDED_SHA256[:16]}... that downloads of Meta's {WEIGHTS_FILE} record "
                                    f"(Meta publishes no digest, so the file is used): FD-DINOv2 from it does not "
                                    f"compare with published values")

    @classmethod
    def from_options(cls, device, options, wanted: frozenset[str]) -> "DINOv2Features":
        path = find_weights(options.dinov2_weights)
        if path is None:
            raise Unavailable(weights_missing_message())
        return cls(device, weights_path=path)

    def describe(self, feature: str) -> str:
        return (f"dinov2_vitl14 class token (facebookresearch/dinov2 architecture, written in nfebench), EDM2 "
                f"preprocessing (bicubic antialiased resize to 224, ImageNet mean/std); weights sha256:{self.sha256} "
                f"({self.verified})")

    @torch.no_grad()
    def extract(self, images: torch.Tensor, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        return {"dinov2": self.model(dinov2_input(images, self.device))}  # (N, 1024)
