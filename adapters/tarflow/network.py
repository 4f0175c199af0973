"""TARFlow's network in torch: state_dict-compatible with apple/ml-tarflow's ``Model``.

The modules follow the reference's `transformer_flow.py` module for module and name for
name, so a ``state_dict`` saved from the reference (for example the released
``afhq_model_8_768_8_8_0.07.pth``) loads unchanged. The decoding passes are our own:

* `MetaBlock.reverse`: sequential decoding with preallocated key/value caches, one token
  per step, the guided and unguided passes stacked in one batch (so guidance doubles the
  work of each step, not the number of steps);
* `MetaBlock.reverse_parallel`: Jacobi and Gauss-Seidel-Jacobi decoding (arXiv
  2505.12849), parallel fixed-point passes over contiguous segments of a block, the
  finished segments' keys and values cached (schedules in `adapters.tarflow.gsjacobi`);
* guidance of the affine outputs (`adapters.tarflow.guidance`), constant or annealed
  ``g_i = (i + 1) / (T - 1) * g``, with an attention temperature on the unconditional pass.

`TARFlow.flops` counts one data-to-noise pass. The sampler that drives these passes is
`adapters.tarflow.sampler`; the Flax port of this module is `adapters.tarflow.jax_network`.

Example::

    >>> net = TARFlow(TARFlowConfig(img_size=8, patch_size=2, channels=64, num_blocks=2, layers_per_block=1,
    ...                             num_classes=10))
    >>> z, logdet = net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]))
    >>> z.shape, logdet.shape
    (torch.Size([2, 16, 12]), torch.Size([2]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adapters.api.errors import InputError
from adapters.layers import patchify, unpatchify
from adapters.tarflow.config import TARFlowConfig
from adapters.tarflow.gsjacobi import NOISE, BlockSchedule
from adapters.tarflow.guidance import guide


def _exp(a: torch.Tensor) -> torch.Tensor:
    # As the reference, exponentiate half-precision log-scales in float32 (float64 stays).
    if a.dtype in (torch.float32, torch.float64):
        return a.exp()
    return a.float().exp().to(a.dtype)


def _step_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for a few rows x: (R, in) -> (R, out), computed as W @ x^T with x row-major.

    Decoding is a long chain of such calls. For R = 2..4 this form is 1.5-2.7x faster than
    `F.linear` (x @ W^T), and 5x faster than W @ x^T with x^T row-major (MKL, AMD EPYC,
    one thread, 3072x768 weights: 0.48 vs 1.28 vs 2.69 ms at R = 2).
    """
    return torch.addmm(layer.bias.unsqueeze(1), layer.weight, x.contiguous().T).T


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    # The reference normalises in float32 and casts back, which matters under bf16/fp16.
    if x.dtype in (torch.float32, torch.float64):
        return norm(x)
    return F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(),
                        norm.eps).to(x.dtype)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention; parameter names as in the reference."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        if channels % head_dim:
            raise InputError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, channels * 3)
        self.proj = nn.Linear(channels, channels)
        self.num_heads = channels // head_dim
        self.head_dim = head_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                q_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Whole sequence at once. x: (N, T, C); mask: (T, T) bool, True = may attend;
        q_scale: per-row 1/temperature, broadcast to (N, H, T, hd)."""
        n, t, c = x.shape
        # The fused projection is laid out [q | k | v], each (heads, head_dim).
        qkv = self.qkv(_layer_norm(self.norm, x)).view(n, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, T, hd)
        if q_scale is not None:
            q = q * q_scale  # scaling the queries divides the logits by the temperature
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))  # (N, T, C)

    def step(self, x: torch.Tensor, i: int, k_cache: torch.Tensor, v_cache: torch.Tensor,
             q_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Token `i` alone, x: (R, C); its key and value are written into the (R, H, T, hd)
        caches, and it attends to cache positions 0..i (no mask needed)."""
        r = x.shape[0]
        qkv = _step_linear(self.qkv, _layer_norm(self.norm, x)).reshape(r, 3, self.num_heads, self.head_dim)
        k_cache[:, :, i] = qkv[:, 1]
        v_cache[:, :, i] = qkv[:, 2]
        q = qkv[:, 0].unsqueeze(2)  # (R, H, 1, hd)
        if q_scale is not None:
            q = q * q_scale
        out = F.scaled_dot_product_attention(q, k_cache[:, :, : i + 1], v_cache[:, :, : i + 1],
                                             scale=self.head_dim**-0.5)
        return _step_linear(self.proj, out.reshape(r, -1))  # (R, C)

    def window(self, x: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor,
               q_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens p..p+W-1 at once, x: (R, W, C), attending to the cached keys and values of
        tokens 0..p-1, (R, H, p, hd) each, and causally within the window. Returns
        (out (R, W, C), the window's keys and values (R, H, W, hd) each)."""
        r, w, c = x.shape
        qkv = self.qkv(_layer_norm(self.norm, x)).view(r, w, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (R, H, W, hd)
        if q_scale is not None:
            q = q * q_scale
        p = k_prefix.shape[2]
        # Row i sees the whole prefix and window tokens 0..i: columns j <= i + p.
        mask = torch.ones(w, p + w, dtype=torch.bool, device=x.device).tril(p)
        out = F.scaled_dot_product_attention(q, torch.cat([k_prefix, k], dim=2), torch.cat([v_prefix, v], dim=2),
                                             attn_mask=mask, scale=self.head_dim**-0.5)
        return self.proj(out.transpose(1, 2).reshape(r, w, c)), k, v


class MLP(nn.Module):
    def __init__(self, channels: int, expansion: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.main = nn.Sequential(nn.Linear(channels, channels * expansion), nn.GELU(),
                                  nn.Linear(channels * expansion, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(_layer_norm(self.norm, x))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One token per row, x: (R, C)."""
        h = F.gelu(_step_linear(self.main[0], _layer_norm(self.norm, x)))
        return _step_linear(self.main[2], h)


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, head_dim: int, expansion: int):
        super().__init__()
        self.attention = Attention(channels, head_dim)
        self.mlp = MLP(channels, expansion)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                q_scale: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attention(x, mask, q_scale)
        return x + self.mlp(x)

    def step(self, x, i, k_cache, v_cache, q_scale=None) -> torch.Tensor:
        """One token per row, x: (R, C), with the layer's key/value caches."""
        x = x + self.attention.step(x, i, k_cache, v_cache, q_scale)
        return x + self.mlp.step(x)

    def window(self, x, k_prefix, v_prefix, q_scale=None):
        """A window of tokens, x: (R, W, C), after a cached prefix; see `Attention.window`.
        Returns (x, the window's keys, values)."""
        out, k, v = self.attention.window(x, k_prefix, v_prefix, q_scale)
        x = x + out
        return x + self.mlp(x), k, v


class MetaBlock(nn.Module):
    """One autoregressive flow block over a (N, T, D) token sequence.

    Forward (data to noise): z_i = (x_i - b_i) * exp(-a_i), where (a_i, b_i) is computed
    causally from x_0..x_{i-1} in this block's order (the identity, or reversed when
    `flip`); (a_0, b_0) = 0. Inputs and outputs are always in the natural token order.
    """

    attn_mask: torch.Tensor

    def __init__(self, token_dim: int, channels: int, num_patches: int, flip: bool, num_layers: int,
                 *, head_dim: int = 64, expansion: int = 4, nvp: bool = True, num_classes: int = 0,
                 affine_clip: float | None = None):
        super().__init__()
        self.flip = flip
        self.nvp = nvp
        self.affine_clip = affine_clip
        self.proj_in = nn.Linear(token_dim, channels)
        self.pos_embed = nn.Parameter(torch.randn(num_patches, channels) * 1e-2)
        self.class_embed = (nn.Parameter(torch.randn(num_classes, 1, channels) * 1e-2)
                            if num_classes else None)
        self.attn_blocks = nn.ModuleList(
            AttentionBlock(channels, head_dim, expansion) for _ in range(num_layers))
        self.proj_out = nn.Linear(channels, token_dim * 2 if nvp else token_dim)
        with torch.no_grad():
            self.proj_out.weight.zero_()  # as the reference: every block starts as the identity
        # Kept as a buffer because reference checkpoints carry it; it is the causal mask used.
        self.register_buffer("attn_mask", torch.tril(torch.ones(num_patches, num_patches)))

    def _permute(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return x.flip(dim) if self.flip else x  # a flip is its own inverse

    def class_term(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """(n, 1, C) class embedding for labels `y`; their mean when `y` is None."""
        if self.class_embed is None:
            return None
        if y is None:
            return self.class_embed.mean(dim=0).expand(n, 1, -1)
        return self.class_embed[y]

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """proj_out output (..., 2D or D) -> log-scale a and shift b, clipped if configured."""
        if self.affine_clip is not None:
            out = out.clamp(-self.affine_clip, self.affine_clip)
        if self.nvp:
            a, b = out.chunk(2, dim=-1)
            return a, b
        return torch.zeros_like(out), out

    def _affine(self, x: torch.Tensor, cls: torch.Tensor | None,
                q_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) for every token of the permuted sequence x: (N, T, D), each (N, T, D)."""
        h = self.proj_in(x) + self._permute(self.pos_embed, dim=0)  # (N, T, C)
        if cls is not None:
            h = h + cls
        mask = self.attn_mask.bool()
        for block in self.attn_blocks:
            h = block(h, mask, q_scale)
        out = self.proj_out(h)  # (N, T, 2D): output i parameterises token i + 1
        out = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
        return self._split(out)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                attn_temp: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Data to noise. x: (N, T, D) -> (z (N, T, D), log|det dz/dx| per sample (N,))."""
        xp = self._permute(x)
        q_scale = None if attn_temp == 1.0 else torch.tensor(1.0 / attn_temp, dtype=x.dtype, device=x.device)
        a, b = self._affine(xp, self.class_term(y, x.shape[0]), q_scale)
        z = (xp - b) * _exp(-a)
        return self._permute(z), -a.sum(dim=(1, 2))

    def _guided_inputs(self, y: torch.Tensor | None, n: int, guided: bool, attn_temp: float,
                       like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Class terms and per-row query scales for a batch of n rows, or 2n rows (conditional
        then unconditional) when guided."""
        cls = self.class_term(y, n)
        if not guided:
            return cls, None
        if cls is not None:
            cls = torch.cat([cls, self.class_term(None, n)])  # (2n, 1, C)
        if attn_temp == 1.0:
            return cls, None
        q_scale = torch.ones(2 * n, 1, 1, 1, dtype=like.dtype, device=like.device)
        q_scale[n:] = 1.0 / attn_temp
        return cls, q_scale

    def reverse(self, z: torch.Tensor, y: torch.Tensor | None = None, guidance: float = 0.0,
                guide_what: str = "ab", attn_temp: float = 1.0,
                annealed_guidance: bool = False) -> torch.Tensor:
        """Noise to data, one token at a time with key/value caches. z: (N, T, D) -> x (N, T, D).

        With guidance > 0 the unconditional pass (mean class embedding, attention
        temperature `attn_temp`) runs stacked under the conditional one in the same batch.
        """
        n, t, _ = z.shape
        guided = guidance > 0 and bool(guide_what)
        x = self._permute(z).clone()  # (N, T, D), filled in place token by token
        cls, q_scale = self._guided_inputs(y, n, guided, attn_temp, z)
        if cls is not None:
            cls = cls[:, 0]  # (rows, C)
        rows = 2 * n if guided else n
        pos = self._permute(self.pos_embed, dim=0)  # (T, C)
        attn0 = self.attn_blocks[0].attention
        caches = [(z.new_empty(rows, attn0.num_heads, t, attn0.head_dim),
                   z.new_empty(rows, attn0.num_heads, t, attn0.head_dim)) for _ in self.attn_blocks]
        for i in range(t - 1):
            tok = x[:, i]  # (N, D)
            if guided:
                tok = torch.cat([tok, tok])  # (2N, D)
            h = _step_linear(self.proj_in, tok) + pos[i]  # (rows, C)
            if cls is not None:
                h = h + cls
            for block, (k_cache, v_cache) in zip(self.attn_blocks, caches):
                h = block.step(h, i, k_cache, v_cache, q_scale)
            a, b = self._split(_step_linear(self.proj_out, h))  # (rows, D) each
            if guided:
                g = (i + 1) / (t - 1) * guidance if annealed_guidance else guidance
                a, b = guide(a, b, n, g, guide_what)
            x[:, i + 1] = x[:, i + 1] * _exp(a) + b
        return self._permute(x)

    def _affine_window(self, xw: torch.Tensor, start: int, caches: list[tuple[torch.Tensor, torch.Tensor]],
                       cls: torch.Tensor | None, q_scale: torch.Tensor | None):
        """(a, b) from the permuted tokens start..start+W-1, xw: (R, W, D), given the layers'
        key/value caches (R, H, T, hd), filled for tokens 0..start-1 (length 0 when start
        is 0: nothing to attend to). Output i parameterises
        token start + i + 1. Returns (a, b) (R, W, D) each and the window's per-layer
        (keys, values), (R, H, W, hd) each."""
        pos = self._permute(self.pos_embed, dim=0)[start:start + xw.shape[1]]  # (W, C)
        h = self.proj_in(xw) + pos  # (R, W, C)
        if cls is not None:
            h = h + cls
        window_kv = []
        for block, (k_cache, v_cache) in zip(self.attn_blocks, caches):
            h, k, v = block.window(h, k_cache[:, :, :start], v_cache[:, :, :start], q_scale)
            window_kv.append((k, v))
        a, b = self._split(self.proj_out(h))
        return a, b, window_kv

    def reverse_parallel(self, z: torch.Tensor, schedule: BlockSchedule, y: torch.Tensor | None = None,
                         guidance: float = 0.0, guide_what: str = "ab", attn_temp: float = 1.0,
                         annealed_guidance: bool = False, *, tol: float = 1e-4) -> tuple[torch.Tensor, list[int]]:
        """Noise to data by (Gauss-Seidel-)Jacobi iteration, z: (N, T, D) -> x (N, T, D).

        The unknown tokens are solved segment by segment (`schedule.segments`; one segment
        is plain Jacobi). Within segment [lo, hi) each pass computes, in parallel,
        x_j <- z_j exp(a_j) + b_j for j in [lo, hi) from tokens lo-1..hi-2 of the current
        iterate, attending to the finished tokens 0..lo-2 through key/value caches. After
        k passes tokens lo..lo+k-1 are exact, so the cap of hi - lo passes is exact. A
        sample stops once no entry of it moves by more than `tol` in a pass and is frozen
        from then on (its iterate and its cached keys), so its result does not depend on
        the other samples in the batch. Returns (x, passes per segment).
        """
        n, t, _ = z.shape
        guided = guidance > 0 and bool(guide_what)
        zp = self._permute(z)
        cls, q_scale = self._guided_inputs(y, n, guided, attn_temp, z)
        g: torch.Tensor | float = guidance
        if guided and annealed_guidance:
            # token j is parameterised at step j - 1, whose annealed scale is j / (T - 1)
            g = guidance * torch.arange(t, dtype=z.dtype, device=z.device).view(1, t, 1) / (t - 1)
        x = zp.clone() if schedule.init == NOISE else torch.cat([zp[:, :1], torch.zeros_like(zp[:, 1:])], dim=1)
        rows = 2 * n if guided else n
        attn0 = self.attn_blocks[0].attention
        cached = t if len(schedule.segments) > 1 else 0  # one segment (Jacobi) attends to no cache
        caches = [(z.new_zeros(rows, attn0.num_heads, cached, attn0.head_dim),
                   z.new_zeros(rows, attn0.num_heads, cached, attn0.head_dim)) for _ in self.attn_blocks]
        passes = []
        for s, ((lo, hi), cap) in enumerate(zip(schedule.segments, schedule.max_iters)):
            active = torch.ones(n, dtype=torch.bool, device=z.device)
            done = 0
            while done < cap and bool(active.any()):
                inp = x[:, lo - 1:hi - 1]  # (N, W, D)
                a, b, window_kv = self._affine_window(torch.cat([inp, inp]) if guided else inp, lo - 1, caches,
                                                      cls, q_scale)
                if guided:
                    a, b = guide(a, b, n, g[:, lo:hi] if torch.is_tensor(g) else g, guide_what)
                new = zp[:, lo:hi] * _exp(a) + b  # (N, W, D)
                moved = (new - x[:, lo:hi]).abs().amax(dim=(1, 2))  # (N,)
                x[:, lo:hi] = torch.where(active.view(n, 1, 1), new, x[:, lo:hi])
                if s + 1 < len(schedule.segments):  # later segments attend to this one's tokens
                    keep = (torch.cat([active, active]) if guided else active).view(rows, 1, 1, 1)
                    for (k_cache, v_cache), (k, v) in zip(caches, window_kv):
                        k_cache[:, :, lo - 1:hi - 1] = torch.where(keep, k, k_cache[:, :, lo - 1:hi - 1])
                        v_cache[:, :, lo - 1:hi - 1] = torch.where(keep, v, v_cache[:, :, lo - 1:hi - 1])
                active = active & (moved > tol)
                done += 1
            passes.append(done)
        return self._permute(x), passes


class TARFlow(nn.Module):
    """The reference ``Model``: `blocks` of MetaBlocks and a prior variance buffer `var`.

    Works on images (N, C, H, W); tokens are non-overlapping patches in `F.unfold` order.
    """

    var: torch.Tensor

    def __init__(self, config: TARFlowConfig):
        super().__init__()
        self.config = config
        self.img_size = config.img_size
        self.patch_size = config.patch_size
        self.blocks = nn.ModuleList(
            MetaBlock(config.token_dim, config.channels, config.num_patches, i % 2 == 1,
                      config.layers_per_block, head_dim=config.head_dim, expansion=config.expansion,
                      nvp=config.nvp, num_classes=config.num_classes, affine_clip=config.affine_clip)
            for i in range(config.num_blocks))
        # Prior variance: ones for the affine ("nvp") flow, learnt for the volume-preserving one.
        self.register_buffer("var", torch.ones(config.num_patches, config.token_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Data to noise. x: (N, C, H, W) -> (z tokens (N, T, D), log|det dz/dx| (N,))."""
        z = patchify(x, self.patch_size)  # (N, T, D)
        logdet = z.new_zeros(z.shape[0])
        for block in self.blocks:
            z, block_logdet = block(z, y)
            logdet = logdet + block_logdet
        return z, logdet

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) per sample (N,) under the prior N(0, var), up to the additive constant
        -D/2 log(2 pi) - 1/2 sum log var, which no gradient sees."""
        z, logdet = self(x, y)
        return -0.5 * (z.pow(2) / self.var).sum(dim=(1, 2)) + logdet

    def reverse(self, z: torch.Tensor, y: torch.Tensor | None = None, guidance: float = 0.0,
                guide_what: str = "ab", attn_temp: float = 1.0, annealed_guidance: bool = False,
                *, schedules: tuple[BlockSchedule, ...] | None = None,
                jacobi_tol: float = 1e-4) -> tuple[torch.Tensor, list[list[int]]]:
        """Noise tokens (N, T, D) -> (image (N, C, H, W), passes per segment of each block).

        `schedules` (one per block, from `gsjacobi.resolve_schedules`) decode in parallel;
        None decodes sequentially, T - 1 steps per block. The passes are listed in
        `blocks` order (block 0, decoded last, first).
        """
        x = z * self.var.sqrt()
        passes: list[list[int]] = [[] for _ in self.blocks]
        for index in reversed(range(len(self.blocks))):
            block = self.blocks[index]
            if schedules is None:
                x = block.reverse(x, y, guidance, guide_what, attn_temp, annealed_guidance)
                passes[index] = [x.shape[1] - 1]
            else:
                x, passes[index] = block.reverse_parallel(x, schedules[index], y, guidance, guide_what, attn_temp,
                                                          annealed_guidance, tol=jacobi_tol)
        return unpatchify(x, self.patch_size, (self.img_size, self.img_size)), passes

    def flops(self) -> int:
        """FLOPs (multiply-add = 2) of one full data-to-noise pass for one sample.

        Counts the matrix products, as `torch.utils.flop_counter.FlopCounterMode` does: the
        causal attention is counted as the full T x T products the kernel computes. The
        sequential sampler does the same linear-layer work (one token per step) and about half
        the attention work.
        """
        config = self.config
        t, d, c = config.num_patches, config.token_dim, config.channels
        out = 2 * d if config.nvp else d
        per_layer = 2 * t * c * (3 * c + c + 2 * config.expansion * c) + 4 * t * t * c
        per_block = 2 * t * d * c + config.layers_per_block * per_layer + 2 * t * c * out
        return config.num_blocks * per_block
