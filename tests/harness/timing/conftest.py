"""A fake family for sweep tests: tiny, fast, and able to fail on cue.

`FakeSampler` is a plain object meeting the `Sampler` protocol (not a TorchSampler), so
the sweep is tested against the contract alone. Its "decoder" is a cheap upsampling that
stands in for the SD-VAE (the latent fakes' spec names the SD-VAE's `DecoderInfo`, as a real
latent family's does); ids ``fake-*`` are registered for one test and removed after.
With the `fake_clock` fixture the sweep's clock is a fake one that only the fake models
move (``FakeConfig.ms_per_image``, ``decode_ms_per_image``, ``noise``), so timings are known.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapters.api import registry
from adapters.api.sampler import RANDOM_INIT, ModelInfo, check_generate_inputs
from adapters.vae import SD_VAE_DECODER


@dataclass(frozen=True)
class FakeConfig:
    space: str = "latent"
    oom_from: int | None = None  # batch sizes >= this raise torch.OutOfMemoryError
    fail_from: int | None = None  # ... raise RuntimeError
    interrupt_from: int | None = None  # ... raise KeyboardInterrupt (Ctrl-C)
    build_oom: bool = False  # building the model runs out of memory
    ms_per_image: float = 0.0  # what one generated image costs on the fake clock
    decode_ms_per_image: float = 0.0  # ... one decoded image
    noise: float = 0.0  # each call's cost times lognormal(0, noise), from a fixed seed per model


class FakeClock:
    """Seconds that move only when a fake model works."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


CLOCK = FakeClock()


class FakeSampler:
    def __init__(self, name: str, config: FakeConfig, device: torch.device, dtype: torch.dtype):
        self.config = config
        with torch.device(device):
            self.net = nn.Conv2d(4, 4, 1).to(dtype)
        self.info = ModelInfo(name=name, family="fake", params=20, nfe=1, sequential_steps=1, space=config.space,
                              sample_shape=(4, 8, 8), image_size=64 if config.space == "latent" else 8,
                              num_classes=10, gflops=2 * 16 * 64 / 1e9, weights=RANDOM_INIT)
        self.decoder_weights = "fake-vae" if config.space == "latent" else None
        self.calls = 0
        self._noise = np.random.default_rng(sum(map(ord, name)))

    def _work(self, ms: float) -> None:
        factor = self._noise.lognormal(0, self.config.noise) if self.config.noise else 1.0
        CLOCK.now += ms * factor / 1e3

    def generate(self, noise, labels, *, guidance=None):
        check_generate_inputs(self.info, noise, labels)
        n, c = noise.shape[0], self.config
        if c.oom_from is not None and n >= c.oom_from:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} GiB")
        if c.fail_from is not None and n >= c.fail_from:
            raise RuntimeError("fake failure\nsecond line")
        if c.interrupt_from is not None and n >= c.interrupt_from:
            raise KeyboardInterrupt
        self.calls += 1
        self._work(c.ms_per_image * n)
        with torch.no_grad():
            return self.net(noise)  # (N, 4, 8, 8)

    def decode(self, x):
        self._work(self.config.decode_ms_per_image * x.shape[0])
        if self.info.space == "pixel":
            return x[:, :3].clamp(-1, 1)
        return F.interpolate(x[:, :3], scale_factor=8).tanh()  # (N, 3, 64, 64)


def build_fake(name, config, *, checkpoint, device, dtype):
    if config.build_oom and device.type != "meta":
        raise torch.OutOfMemoryError("CUDA out of memory while building")
    return FakeSampler(name, config, device, dtype)


@pytest.fixture
def fake_models(monkeypatch):
    """Registers fake-a, fake-b (latent), fake-pixel, fake-oom (OOM from batch 2),
    fake-fail (error from batch 2), fake-interrupt (Ctrl-C from batch 2), fake-huge (OOM
    when built) for one test.
    The built-in families are not imported: the registry is swapped for a copy marked loaded."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_loaded", True)
    configs = {"fake-a": FakeConfig(), "fake-b": FakeConfig(), "fake-pixel": FakeConfig(space="pixel"),
               "fake-oom": FakeConfig(oom_from=2), "fake-fail": FakeConfig(fail_from=2),
               "fake-interrupt": FakeConfig(interrupt_from=2), "fake-huge": FakeConfig(build_oom=True)}
    for name, config in configs.items():
        register(name, config)
    return configs


def register(name: str, config: FakeConfig, **hooks) -> None:
    """Register a fake id; a latent one decodes with the SD-VAE unless `hooks` name another decoder."""
    hooks.setdefault("decoder", SD_VAE_DECODER if config.space == "latent" else None)
    registry.register(name, family="fake", config=config, build=build_fake, **hooks)


@pytest.fixture
def fake_clock(monkeypatch):
    """The sweep's clock is `CLOCK`, moved only by the fake models' configured costs."""
    from harness.timing import torch_runner
    from harness.timing.clocks import WallClock

    monkeypatch.setattr(torch_runner, "clock_for", lambda device: WallClock(CLOCK))
    return CLOCK


@pytest.fixture
def fake_pair(fake_models, monkeypatch):
    """fake-fast (2 ms per image) and its teacher fake-slow (60 ms per image), a pair in
    `harness.pairs`, and fake-solo (5 ms per image) with no teacher; each decoded image costs 3 ms."""
    from harness import pairs

    configs = {"fake-fast": FakeConfig(ms_per_image=2.0, decode_ms_per_image=3.0),
               "fake-slow": FakeConfig(ms_per_image=60.0, decode_ms_per_image=3.0),
               "fake-solo": FakeConfig(ms_per_image=5.0, decode_ms_per_image=3.0)}
    for name, config in configs.items():
        register(name, config)
    monkeypatch.setattr(pairs, "PAIRS", (("fake-fast", "fake-slow"),))
    return configs


@pytest.fixture
def register_fake(fake_models):
    """register_fake("fake-x", ms_per_image=5.0, noise=0.1): one more fake model for this test
    (``decoder=DecoderInfo(...)``: a latent one that decodes with another decoder than the SD-VAE)."""

    def register_one(name: str, decoder=None, **config) -> None:
        register(name, FakeConfig(**config), **({} if decoder is None else {"decoder": decoder}))

    return register_one
