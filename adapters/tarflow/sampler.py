"""TARFlow and iTARFlow behind the `Sampler` interface: `TARFlowSampler` and the registry's `build`.

The network is `adapters.tarflow.network.TARFlow` (apple/ml-tarflow's ``Model``, name for
name); this module drives its decoding passes and adds what sampling needs beyond them:

* the decoding choice, sequential (exact, key/value-cached), Jacobi or Gauss-Seidel-Jacobi
  (arXiv 2505.12849; the schedules, options and the paper's block metrics are in
  `adapters.tarflow.gsjacobi`), with the passes of every call in `last_stats`;
* classifier-free guidance as in the reference (``a += g * (a - a_uncond)``, the same for
  ``b``), constant or annealed, with an attention temperature on the unconditional pass
  (`adapters.tarflow.guidance`);
* the score-based denoising step ``x <- x + sigma^2 * grad log p(x)`` after sampling.

iTARFlow is the "improved TARFlow" that BiFlow (arXiv 2512.10953) uses as its forward model:
the same network on the SD-VAE latent, with the affine outputs clipped to ``[-c, c]``.

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("tarflow", img_size=32, in_channels=3, patch_size=4, channels=64,
    ...                  num_blocks=2, layers_per_block=2, num_classes=10, noise_std=0.05)
    >>> z = torch.randn(2, *s.info.sample_shape)
    >>> s.generate(z, torch.tensor([3, 7]), guidance=1.5, annealed_guidance=True).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import inspect

import torch

from adapters.api.checkpoint import CheckpointRef
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo
from adapters.base import TorchSampler
from adapters.builder import build_sampler, sample_fields
from adapters.layers import patchify
from adapters.tarflow.config import TARFlowConfig, check_config
from adapters.tarflow.gsjacobi import (
    GS_JACOBI,
    SEQUENTIAL,
    resolve_schedules,
    summarize_iterations,
)
from adapters.tarflow.guidance import check_guidance_options
from adapters.tarflow.network import TARFlow

FAMILY = "tarflow"


class TARFlowSampler(TorchSampler):
    """A TARFlow behind the `Sampler` interface (see `_generate` for the options)."""

    net: TARFlow

    def __init__(self, info: ModelInfo, net: TARFlow, config: TARFlowConfig, *, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(info, net.requires_grad_(False), device=device, dtype=dtype, vae=config.vae)
        self.config = config

    def compile(self, backend: str = "inductor") -> str:
        """torch.compile what sampling runs: each layer's one-token `step` (the sequential
        loop calls it num_blocks * (T - 1) times per layer), each block's window pass
        (Jacobi and GS-Jacobi) and the full forward (the denoising step). The token index,
        window length and prefix length change from call to call, so `step` and the window
        pass are compiled with dynamic shapes, once, rather than once per shape."""
        for block in self.net.blocks:
            for layer in block.attn_blocks:
                layer.step = torch.compile(layer.step, backend=backend, dynamic=True)
            block._affine_window = torch.compile(block._affine_window, backend=backend, dynamic=True)
        self.net.compile(backend=backend, dynamic=False)
        return "layer.step+block.window+net"

    # The options that choose a parallel decoding; without them decoding is sequential, exact.
    PARALLEL_OPTIONS = ("decoding", "jacobi_tol", "jacobi_max_iters", "jacobi_init", "gs_segments")

    def exact_options(self, options: dict) -> dict:
        """`options` decoded sequentially (unchanged if they are): the reference setting the
        quality gate (`harness.quality`) holds a Jacobi or GS-Jacobi setting to."""
        if options.get("decoding", SEQUENTIAL) == SEQUENTIAL:
            return dict(options)
        return {**{k: v for k, v in options.items() if k not in self.PARALLEL_OPTIONS}, "decoding": SEQUENTIAL}

    def check_options(self, **options) -> None:
        """Raise InputError for bad decoding options before anything is sampled: each of the declared
        type (`TorchSampler.check_options`), and no Jacobi option under a decoding that ignores it (a
        setting timed as sequential decoding but labelled with a tolerance would be a false row)."""
        super().check_options(**options)
        defaults = inspect.signature(self._generate).parameters
        decoding = options.get("decoding", defaults["decoding"].default)
        if decoding == SEQUENTIAL:
            unused = sorted(k for k in options if k in self.PARALLEL_OPTIONS and k != "decoding")
            if unused:
                raise InputError(f"{self.info.name}: {', '.join(unused)} has no effect under decoding='{SEQUENTIAL}'; "
                                 f"it is used by decoding='jacobi' and 'gs-jacobi' (add decoding=jacobi, or drop it)")
        given = {k: options.get(k, defaults[k].default) for k in self.PARALLEL_OPTIONS}
        resolve_schedules(self.info.name, self.config.num_blocks, self.config.num_patches, **given)

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  annealed_guidance: bool = False, attn_temp: float = 1.0, guide_what: str = "ab",
                  denoise: bool | None = None, decoding: str = SEQUENTIAL, jacobi_tol: float = 1e-4,
                  jacobi_max_iters: int | tuple[int | None, ...] | None = None,
                  jacobi_init: str | tuple[str, ...] | None = None,
                  gs_segments: int | tuple[int, ...] | None = None) -> torch.Tensor:
        """Noise (N, *sample_shape) -> samples of the same shape.

        Every call records its decoding passes in `last_stats` (keys in
        `adapters.tarflow.gsjacobi`): ``iterations_per_block`` (block 0 first; T - 1 each
        for sequential decoding), ``iterations_mean``, ``iterations_max`` and
        ``iterations_total`` over blocks, and for "gs-jacobi" ``iterations_per_segment``.

        Args:
            noise: standard normal noise, (N, C, H, W) in model space.
            labels: (N,) class ids, or None for the mean class embedding (or an
                unconditional model).
            guidance: classifier-free guidance scale g >= 0; None uses the config's
                ``guidance``; 0 runs no unconditional pass.
            annealed_guidance: scale g by (i + 1) / (T - 1) at token step i, as the
                reference FID script does.
            attn_temp: attention temperature of the unconditional pass.
            guide_what: which affine outputs to guide: "ab", "a" or "b".
            denoise: take the score step x + sigma^2 * grad log p(x) (one more forward and
                backward pass); None uses the config's ``denoise``.
            decoding: "sequential" (key/value-cached, token by token), "jacobi" (parallel
                passes over whole blocks) or "gs-jacobi" (Jacobi passes over segments of
                each block, one segment after the other; arXiv 2505.12849).
            jacobi_tol: a segment (Jacobi: a block) stops for a sample once none of its
                entries moves by more than this in one pass; 0 runs to the cap.
            jacobi_max_iters: pass cap per segment; None means the segment's length (T - 1
                for Jacobi), which is always exact. An int, or a tuple with one per block.
            jacobi_init: initial guess, "noise" (x = z, the default) or "zeros" (z_0, then
                zeros); one, or a tuple with one per block.
            gs_segments: GS-Jacobi segments per block, 1 (Jacobi) to T - 1 (sequential); an
                int, or a tuple with one per block, block 0 first. None: 1 for every block
                (`gsjacobi.DEFAULT_GS_SEGMENTS`); `gsjacobi.gs_jacobi_plan` ranks the
                blocks on data and gives the paper's per-block settings.

        Example::

            s = load_sampler("tarflow-imagenet64")
            x = s.generate(torch.randn(4, 3, 64, 64), torch.arange(4), guidance=2.3,
                           annealed_guidance=True, decoding="gs-jacobi",
                           gs_segments=(1, 1, 1, 1, 1, 1, 8, 1), jacobi_tol=1e-3)
            s.last_stats["iterations_per_block"]
        """
        guidance = check_guidance_options(self.info.name, self.config.guidance if guidance is None else guidance,
                                          attn_temp, guide_what)
        denoise = self.config.denoise if denoise is None else denoise
        schedules = resolve_schedules(self.info.name, self.config.num_blocks, self.config.num_patches,
                                      decoding=decoding, jacobi_tol=jacobi_tol, jacobi_max_iters=jacobi_max_iters,
                                      jacobi_init=jacobi_init, gs_segments=gs_segments)
        tokens = patchify(noise, self.config.patch_size)  # (N, T, D)
        x, passes = self.net.reverse(tokens, labels, guidance, guide_what, attn_temp, annealed_guidance,
                                     schedules=schedules, jacobi_tol=jacobi_tol)
        self.last_stats = summarize_iterations([sum(p) for p in passes], passes if decoding == GS_JACOBI else None)
        if denoise and self.config.noise_std > 0:
            x = self.denoise(x, labels)
        return x

    def denoise(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """One score step x + sigma^2 * grad_x log p(x | labels): Tweedie's estimate of the
        clean sample, since training added N(0, sigma^2) noise to the data."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.net.log_prob(x, labels).sum(), x)
        return (x + self.config.noise_std**2 * grad).detach()


def build(name: str, config: TARFlowConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> TARFlowSampler:
    """Registry builder for the TARFlow ids (see `adapters.load_sampler`).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        config: a `TARFlowConfig`.
        checkpoint: a state_dict of apple/ml-tarflow's ``Model`` (e.g. the released
            ``afhq_model_8_768_8_8_0.07.pth``), or a container whose EMA entry (or the entry
            the ref names) is one; None: random weights (every block starts as the identity).
        device, dtype: where and in what precision the network runs ("meta" allocates nothing).

    Example::

        >>> s = build("tarflow", TARFlowConfig(img_size=8, channels=64, num_blocks=2, layers_per_block=1))
        >>> s.info.nfe, s.info.sequential_steps, s.info.weights
        (2, 31, 'random-init')
    """
    check_config(name, config)
    denoising = int(config.denoise and config.noise_std > 0)

    def describe(net: TARFlow) -> dict:
        return dict(
            # Network evaluations of sampling: the token steps of all blocks add up to one full
            # pass, two with guidance (the unconditional pass), plus one for the denoising
            # step's forward pass when it runs (config.denoise, on by default as in the paper).
            # Its backward pass (about two passes' worth of compute) is not an evaluation and
            # is not counted, so MFU understates a denoised TARFlow by that much.
            nfe=(2 if config.guidance > 0 else 1) + denoising,
            # Guided and unguided passes share a batch, so guidance adds no sequential steps;
            # the denoising forward is one more (parallel over tokens).
            sequential_steps=config.num_blocks * (config.num_patches - 1) + denoising,
            num_classes=config.num_classes,
            **sample_fields(config.space, config.in_channels, config.img_size, config.image_size or config.img_size))

    return build_sampler(name, FAMILY, make_net=lambda: TARFlow(config), describe=describe, checkpoint=checkpoint,
                         device=device, dtype=dtype,
                         sampler=lambda info, net: TARFlowSampler(info, net, config, device=torch.device(device),
                                                                  dtype=dtype))
