"""`JaxSampler`: a registered model run by JAX, with the weights of its PyTorch adapter.

``load_sampler(id, backend="jax")`` builds the PyTorch sampler on the CPU (random weights under
the same fixed seed, or a checkpoint) and hands it to its family's port (`ModelSpec.jax_port`),
whose ``load`` (`port_loader`) converts its ``state_dict`` with the port's ``convert_params``
and jit-compiles the port's pure ``generate`` (`from_torch`).
So one checkpoint serves both back-ends and ``info`` (parameters, FLOPs, NFE, weights
fingerprint) is the PyTorch adapter's, word for word.

Batches are split over the local devices along the batch axis (`jax.sharding`): the
parameters are replicated, noise and labels sharded, over the largest number of devices
that divides the batch size (all of them for the usual powers of two).

`generate` and `decode` take torch tensors or numpy arrays (what `adapters.api.seeding`
makes) and return ``jax.Array``. The benchmark times ahead-of-time compiled calls
(`compile`), so compilation is measured apart from the timed calls.

Example::

    s = load_sampler("biflow-b2", backend="jax", dtype="bfloat16")
    z = sample_noise(0, range(8), s.info.sample_shape)
    x = s.generate(z, sample_labels(0, range(8), 1000))     # jax.Array (8, 4, 32, 32)
    images = s.decode(x)                                      # (8, 3, 256, 256) in [-1, 1]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from typing import Any, Callable

import numpy as np

from adapters.api.devices import jax_devices, require_jax
from adapters.api.errors import InputError
from adapters.api.sampler import (
    ModelInfo,
    NonFiniteSampleError,
    as_generate_inputs,
    check_decode_input,
    check_guidance,
)

DTYPES = ("float32", "bfloat16", "float16")
# Parts a compiled call can cover (the sweep's `decode` column values).
GENERATOR, END_TO_END, DECODER = "off", "on", "only"
_WITH_STATS = "stats"  # the generator alone, also returning what fills `last_stats`


def devices_for_batch(devices: list, batch_size: int) -> list:
    """The first k devices, k the largest device count that divides `batch_size`."""
    k = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    return devices[:k]


def _jnp_dtype(dtype: Any):
    import jax.numpy as jnp

    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} for the JAX backend; choose one of {', '.join(DTYPES)}")
    return getattr(jnp, name), name


@dataclass
class CompiledCall:
    """An ahead-of-time compiled call and what compiling it measured.

    `call(inputs)` runs it on inputs from `CompiledCall.inputs` (already on the devices);
    `compile_s` is the wall time of lowering and compiling; `memory_bytes` is XLA's
    static estimate of the memory one call needs per device (arguments, outputs and
    temporaries), or None where the backend does not say.
    """

    call: Callable[[tuple], Any]
    compile_s: float
    memory_bytes: int | None
    num_devices: int


class JaxSampler:
    """A model behind the `Sampler` interface, run by JAX (see the module docstring)."""

    backend = "jax"

    def __init__(self, info: ModelInfo, config: Any, params: Any, generate: Callable, family_options: tuple[str, ...],
                 *, dtype: Any = "float32", devices: list | None = None, vae: str | None = None, vae_spec: Any = None,
                 stats: tuple[Callable, Callable] | None = None):
        jax = require_jax()
        self.info = info
        self.config = config
        self.dtype, self.dtype_name = _jnp_dtype(dtype)
        self.devices = list(devices or jax.local_devices())
        self.family_options = family_options
        self._generate_fn = generate
        self._host_params = params  # numpy, float32: cast and placed per device set on demand
        self._placed: dict[tuple, Any] = {}
        self._vae_source = vae
        self._vae_spec = vae_spec  # adapters.vae.VAESpec of the torch adapter; None: the SD default
        self._decoder: tuple[Any, Callable, str, int] | None = None  # (params, decode fn, weights, count)
        self._jitted: dict[tuple, Callable] = {}
        # (generate returning (x, aux), (aux, options) -> dict): what `generate` reports of
        # itself in `last_stats`, as TorchSampler's families do; None: nothing to report.
        self._stats = stats
        self.last_stats: dict[str, Any] = {}

    # --- devices and placement -------------------------------------------------------

    def _shardings(self, devices: list):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("batch",))
        return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("batch"))

    def _params_on(self, devices: list, which: str = "generator"):
        """The parameters (cast to the compute dtype) replicated on `devices`, cached."""
        import jax

        key = (which, tuple(d.id for d in devices))
        if key not in self._placed:
            host = self._host_params if which == "generator" else self._decoder_parts()[0]
            replicated, _ = self._shardings(devices)
            cast = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(self.dtype) if np.asarray(a).dtype.kind == "f"
                                          else np.asarray(a), host)
            self._placed[key] = jax.device_put(cast, replicated)
        return self._placed[key]

    def place(self, devices: list, *arrays):
        """Host arrays (torch or numpy; None passes through) -> arrays sharded over `devices`
        along the batch axis, floating ones cast to the compute dtype."""
        import jax

        _, sharded = self._shardings(devices)
        out = []
        for a in arrays:
            if a is None:
                out.append(None)
                continue
            a = _host_array(a)
            a = a.astype(self.dtype) if a.dtype.kind == "f" else a.astype(np.int32)
            out.append(jax.device_put(a, sharded))
        return tuple(out)

    # --- the decoder -----------------------------------------------------------------

    def _decoder_parts(self):
        if self.info.space != "latent":
            return None
        if self._decoder is None:
            from adapters.jax.vae import convert_decoder_params, make_decode
            from adapters.vae import SD_FT_EMA, SDVAEDecoder

            torch_vae = SDVAEDecoder(self._vae_source, device="cpu", spec=self._vae_spec or SD_FT_EMA)
            params = convert_decoder_params(torch_vae.vae.state_dict(), "sd-vae")
            decode = make_decode(norm=torch_vae.spec.norm)
            self._decoder = (params, decode, torch_vae.weights, torch_vae.params)
        return self._decoder

    @property
    def decoder_weights(self) -> str | None:
        parts = self._decoder_parts()
        return None if parts is None else parts[2]

    @property
    def decoder_params(self) -> int | None:
        parts = self._decoder_parts()
        return None if parts is None else parts[3]

    # --- the functions compiled ------------------------------------------------------

    def _resolve(self, guidance: float | None, options: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        unknown = sorted(set(options) - set(self.family_options))
        if unknown:
            raise InputError(f"{self.info.name}: unknown option(s) {', '.join(unknown)}; "
                             f"this family accepts: {', '.join(self.family_options) or 'none'}")
        default = getattr(self.config, "guidance", 0.0)
        return check_guidance(self.info.name, default if guidance is None else guidance), options

    def _function(self, part: str, guidance: float, options: dict[str, Any]) -> Callable:
        """The jitted pure function of `part`: (params, decoder params, x, labels) -> out."""
        import jax

        key = (part, guidance, tuple(sorted(options.items())))
        if key not in self._jitted:
            gen = partial(self._stats[0] if part == _WITH_STATS else self._generate_fn, guidance=guidance, **options)
            dec = None if self.info.space != "latent" else self._decoder_parts()[1]

            def run(params, dec_params, x, labels):
                if part != DECODER:
                    x = gen(params, x, labels)  # (N, *sample_shape)
                if part in (GENERATOR, _WITH_STATS):
                    return x
                return _clamp(x) if dec is None else dec(dec_params, x)  # (N, 3, H, W)

            self._jitted[key] = jax.jit(run)
        return self._jitted[key]

    def _args(self, part: str, devices: list, x, labels):
        params = self._params_on(devices)
        dec_params = self._params_on(devices, "decoder") if part != GENERATOR and self.info.space == "latent" else None
        return params, dec_params, x, labels

    def compile(self, part: str, batch_size: int, *, guidance: float | None = None,
                **options: Any) -> tuple[CompiledCall, tuple]:
        """Compile `part` (GENERATOR, END_TO_END or DECODER) for `batch_size` ahead of time.

        Returns the compiled call and its arguments (parameters and the batch of noise or
        latents, already on the devices; labels from `adapters.api.seeding` by the caller are
        placed with `place`). Compilation happens here, timed, and never in the call.
        """
        g, options = self._resolve(guidance, options)
        devices = devices_for_batch(self.devices, batch_size)
        fn = self._function(part, g, options)
        shape = (batch_size, *self.info.sample_shape)
        x = np.zeros(shape, np.float32)
        labels = None if part == DECODER or self.info.num_classes == 0 else np.zeros(batch_size, np.int32)
        args = self._args(part, devices, *self.place(devices, x, labels))
        start = time.perf_counter()
        compiled = fn.lower(*args).compile()
        seconds = time.perf_counter() - start
        return CompiledCall(lambda a: compiled(*a), seconds, _memory_bytes(compiled), len(devices)), args

    def arguments(self, part: str, batch_size: int, x, labels) -> tuple:
        """The arguments of a `compile`d call for host inputs `x` (noise, or latents for
        DECODER) and `labels`, placed on the devices."""
        devices = devices_for_batch(self.devices, batch_size)
        return self._args(part, devices, *self.place(devices, x, labels))

    # --- the Sampler interface -------------------------------------------------------

    def generate(self, noise, labels, *, guidance: float | None = None, **options: Any):
        """Noise (N, *sample_shape) and labels (N,) or None -> samples, a jax.Array."""
        noise, labels = as_generate_inputs(self.info, _host_array(noise),
                                           None if labels is None else _host_array(labels))
        g, options = self._resolve(guidance, options)
        n = noise.shape[0]
        if n == 0:  # an empty batch is an empty result, not a shape error from XLA
            import jax.numpy as jnp

            return jnp.zeros((0, *self.info.sample_shape), self.dtype)
        args = self.arguments(GENERATOR, n, noise, labels)
        self.last_stats = {}
        if self._stats is None:
            return _check_finite(self._function(GENERATOR, g, options)(*args), f"{self.info.name} generate")
        x, aux = self._function(_WITH_STATS, g, options)(*args)
        self.last_stats = self._stats[1](aux, options)
        return _check_finite(x, f"{self.info.name} generate")

    def decode(self, x):
        """Model-space samples -> images in [-1, 1], NCHW, a jax.Array."""
        x = check_decode_input(self.info, _host_array(x))
        args = self.arguments(DECODER, x.shape[0], x, None)
        return _check_finite(self._function(DECODER, 0.0, {})(*args), f"{self.info.name} decode")


def _host_array(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        return a.float().numpy() if a.is_floating_point() else a.numpy()
    return np.asarray(a)


def _clamp(x):
    import jax.numpy as jnp

    return jnp.clip(x, -1, 1)


def _memory_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # not every backend or jax version reports it
        return None


def _check_finite(x, what: str):
    import jax.numpy as jnp

    bad = np.asarray(~jnp.isfinite(x.reshape(x.shape[0], -1)).all(axis=1))
    if bad.any():
        rows = np.flatnonzero(bad).tolist()
        raise NonFiniteSampleError(f"{what}: non-finite values in {len(rows)} of {x.shape[0]} samples "
                                   f"(batch rows {rows[:8]}); check the checkpoint, the dtype and the guidance scale")
    return x


def from_torch(port: Any, torch_sampler: Any, *, dtype: Any = "float32", device: str = "auto") -> JaxSampler:
    """The JAX sampler of a Flax `port` module with `torch_sampler`'s weights, config and `info`.

    Args:
        port: the family's port module (``convert_params``, ``make_generate``, ``FAMILY_OPTIONS``,
            and optionally ``make_generate_with_stats`` with ``iteration_stats``).
        torch_sampler: the PyTorch adapter, built on the CPU with the weights to convert.
        dtype: "float32", "bfloat16" or "float16" (a torch dtype is accepted too).
        device: "auto" (JAX's default backend), "cpu", "gpu" or "tpu"; every local device
            of that platform is used.
    """
    require_jax()
    _jnp_dtype(dtype)  # a bad dtype fails before anything is converted
    devices = jax_devices(device)
    info, config = torch_sampler.info, torch_sampler.config
    params = port.convert_params(torch_sampler.net.state_dict(), config, info.name)
    generate = port.make_generate(config, info.family, name=info.name)
    stats = None  # a port that reports statistics (decoding passes) has both of these
    if hasattr(port, "make_generate_with_stats"):
        stats = (port.make_generate_with_stats(config, info.family, name=info.name), port.iteration_stats)
    return JaxSampler(info, config, params, generate, tuple(port.FAMILY_OPTIONS), dtype=dtype, devices=devices,
                      vae=getattr(config, "vae", None), vae_spec=getattr(torch_sampler, "vae_spec", None), stats=stats)


def port_loader(module: str) -> Callable[..., JaxSampler]:
    """The ``load(torch_sampler, *, dtype, device)`` a port module exports for the registry
    (``load_sampler(..., backend="jax")``): `from_torch` with that module as the port.

    Example (the last line of a port module)::

        load = port_loader(__name__)
    """
    def load(torch_sampler: Any, *, dtype: Any = "float32", device: str = "auto") -> JaxSampler:
        return from_torch(import_module(module), torch_sampler, dtype=dtype, device=device)

    return load
