"""Fixtures shared across the test tree."""

import sys
import types
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adapters import registry
from harness.errors import InputError
from harness.sampler import RANDOM_INIT, ModelInfo


@dataclass(frozen=True)
class FakeConfig:
    guidance: float = 0.0
    vae: str | None = None
    space: str = "pixel"  # "latent": decoded by a stand-in for the SD-VAE (x8 upsampling, tanh)


class FakeTorchSampler:
    """out = conv1x1(noise) + (1 + guidance) * label / 10, per sample."""

    def __init__(self, name, config):
        self.config = config
        self.net = nn.Conv2d(4, 4, 1)
        self.info = ModelInfo(name=name, family="fake-jax", params=20, nfe=1, sequential_steps=1, space=config.space,
                              sample_shape=(4, 4, 4), image_size=32 if config.space == "latent" else 4,
                              num_classes=10, gflops=1e-6, weights=RANDOM_INIT)

    def generate(self, noise, labels, *, guidance=None, scale=1.0):
        g = self.config.guidance if guidance is None else guidance
        with torch.no_grad():
            out = self.net(noise) * scale
        return out + (1 + g) * labels.view(-1, 1, 1, 1).float() / 10


def convert_params(state_dict, config, what):
    from adapters.jax.convert import StateDictReader

    r = StateDictReader(state_dict, what)
    params = {"w": r.get("weight", 4, 4, 1, 1)[:, :, 0, 0], "b": r.get("bias", 4)}
    r.finish()
    return params


TRACES: list[int] = []  # one entry per trace of the fake port's generate (= per compilation)


def make_generate(config, family, *, name=None):
    import jax.numpy as jnp

    def generate(params, noise, labels, *, guidance, scale=1.0):
        TRACES.append(1)
        if scale == 0:
            raise InputError("scale must not be 0")
        out = jnp.einsum("oc,nchw->nohw", params["w"], noise) + params["b"][None, :, None, None]  # (N, 4, H, W)
        out = out * scale
        return out + (1 + guidance) * labels.astype(out.dtype)[:, None, None, None] / 10

    return generate


def fake_decoder():
    """(params, decode, weights, parameter count), as JaxSampler._decoder_parts gives them."""
    import jax
    import jax.numpy as jnp

    def decode(params, x):  # (N, 4, h, w) -> (N, 3, 8h, 8w)
        return jnp.tanh(jax.image.resize(x[:, :3], (x.shape[0], 3, 8 * x.shape[2], 8 * x.shape[3]), "nearest"))

    return {}, decode, "fake-vae", 7


@pytest.fixture
def fake_jax_family(monkeypatch):
    """Registers ``fake-jax`` (pixel) and ``fake-jax-latent`` (a torch sampler and its JAX
    port) for one test; returns the list that grows by one each time the port's generate
    is traced."""
    from adapters.jax import sampler as jax_sampler

    registry.list_models()  # the built-in families are loaded before the registry is copied
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    for name, config in (("fake-jax", FakeConfig()), ("fake-jax-latent", FakeConfig(space="latent"))):
        registry.register(name, family="fake-jax", config=config,
                          build=lambda name, config, **kw: FakeTorchSampler(name, config))
    real_parts = jax_sampler.JaxSampler._decoder_parts
    monkeypatch.setattr(jax_sampler.JaxSampler, "_decoder_parts",
                        lambda self: fake_decoder() if self.info.family == "fake-jax" and
                        self.info.space == "latent" else real_parts(self))
    port = types.ModuleType("fake_jax_port")
    port.convert_params, port.make_generate, port.FAMILY_OPTIONS = convert_params, make_generate, ("scale",)
    monkeypatch.setitem(sys.modules, "fake_jax_port", port)
    monkeypatch.setitem(jax_sampler.PORTS, "fake-jax", "fake_jax_port")
    TRACES.clear()
    return TRACES


