"""What the Flax ports' parity tests share (tests/adapters/<family>/test_jax_port.py): a torch
sampler beside its family's port on the same weights, both run on the same noise and labels.

The family tests keep their own settings, parametrisations and tolerances; these helpers only run
the two sides and hand back what the tests then compare. Test modules import this one relatively
(``from ..jax_parity import Port``), which pytest's importlib mode allows from pytest 8.2.

Example (a family's test module)::

    @pytest.fixture(scope="module")
    def model(make_random_sampler):
        return Port.of(make_random_sampler("imf-b2", seed=1, **TINY), port)

    def test_matches_torch(model):
        noise, labels = model.inputs()
        ref, out = model.samples(noise, labels, guidance=4.0)
        assert relative_deviation(out, ref) <= 1e-4
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters import load_sampler
from adapters.api.errors import InputError

LABELS = (3, 0, 9)  # three classes, the first not 0, so a dropped or shifted label shows


def noise_and_labels(shape: tuple[int, ...], n: int = 3, seed: int = 0, *, labels: bool = True):
    """Seeded standard-normal noise (n, *shape) and the labels `LABELS[:n]` (None where not `labels`)."""
    noise = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
    return noise, torch.tensor(LABELS[:n]) if labels else None


def jax_inputs(noise: torch.Tensor, labels: torch.Tensor | None, dtype=jnp.float32):
    """(noise as a `dtype` array, labels as int32 or None), as the port's generate takes them."""
    return jnp.asarray(noise.numpy(), dtype), None if labels is None else jnp.asarray(labels.numpy(), jnp.int32)


def relative_deviation(out, ref) -> float:
    """max |out - ref| / max |ref|, computed in float64."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def max_deviation(out, ref) -> float:
    """max |out - ref|, computed in float64."""
    return float(np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64)).max())


@dataclass(frozen=True)
class Port:
    """A torch sampler (`sampler`), its weights converted by its family's port module (`module`,
    named `name` in its messages) into `params`, and the port's jitted `generate`."""

    sampler: Any
    module: ModuleType
    name: str
    params: Any
    generate: Callable[..., jax.Array]

    @classmethod
    def of(cls, sampler, module: ModuleType, name: str | None = None) -> Port:
        """The port of `sampler` (its weights as they are): guidance and the family's options static under jit."""
        name = sampler.info.name if name is None else name
        params = module.convert_params(sampler.net.state_dict(), sampler.config, name)
        generate = jax.jit(module.make_generate(sampler.config, sampler.info.family, name=name),
                           static_argnames=("guidance", *module.FAMILY_OPTIONS))
        return cls(sampler, module, name, params, generate)

    def inputs(self, n: int = 3, seed: int = 0, *, labels: bool = True):
        """`noise_and_labels` of the sampler's sample shape."""
        return noise_and_labels(self.sampler.info.sample_shape, n, seed, labels=labels)

    def samples(self, noise, labels, *, torch_options: dict | None = None, **options):
        """(torch's sample, the port's as a float32 numpy array) of the same noise and labels, the
        port run with `options` and torch with `torch_options` (default: the same `options`); the
        port's sample is checked to come back in torch's shape and in float32."""
        ref = self.sampler.generate(noise, labels, **(options if torch_options is None else torch_options)).numpy()
        out = self.generate(self.params, *jax_inputs(noise, labels), **options)
        assert out.shape == ref.shape and out.dtype == jnp.float32
        return ref, np.asarray(out)

    def bfloat16_deviation(self, noise, labels, **options) -> float:
        """The port's bfloat16 sample (params and noise cast) against its float32 one, relative;
        the bfloat16 run is checked to return bfloat16."""
        ref = np.asarray(self.generate(self.params, *jax_inputs(noise, labels), **options))
        p16 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), self.params)
        out = self.generate(p16, *jax_inputs(noise, labels, jnp.bfloat16), **options)
        assert out.dtype == jnp.bfloat16
        return relative_deviation(np.asarray(out, np.float32), ref)

    def assert_refuses_like_torch(self, noise, labels, **options) -> None:
        """Both sides raise InputError on `options`, with the same message."""
        with pytest.raises(InputError) as torch_err:
            self.sampler.generate(noise, labels, **options)
        with pytest.raises(InputError) as jax_err:
            self.generate(self.params, *jax_inputs(noise, labels), **options)
        assert str(jax_err.value) == str(torch_err.value)

    def conversion_error(self, *, drop: tuple[str, ...] = (), put: dict | None = None) -> str:
        """The InputError message of converting the sampler's state_dict with the keys `drop`
        removed and the tensors `put` added or replaced (the conversion must refuse it)."""
        sd = dict(self.sampler.net.state_dict())
        for key in drop:
            del sd[key]
        sd.update(put or {})
        with pytest.raises(InputError) as err:
            self.module.convert_params(sd, self.sampler.config, self.name)
        return str(err.value)


def jax_backend_twin(model: str, checkpoint, **overrides):
    """``load_sampler(model, checkpoint, backend="jax", device="cpu", **overrides)``, checked to
    carry the torch adapter's info (from the same file and overrides) word for word."""
    js = load_sampler(model, checkpoint=str(checkpoint), backend="jax", device="cpu", **overrides)
    assert js.info == load_sampler(js.info.name, checkpoint=str(checkpoint), **overrides).info
    return js
