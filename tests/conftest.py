"""Fixtures shared across the test tree."""

import ctypes
import gc
import importlib
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch
from torch import nn

from adapters.api import registry
from adapters.api.errors import InputError
from adapters.api.sampler import RANDOM_INIT, DecoderInfo, ModelInfo


# tox -e test spreads the files over pytest-xdist workers (one per core, at most four). Each worker
# takes its share of torch's intra-op threads, so that the workers do not oversubscribe the cores.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def _keep_freed_memory(limit: int = 1 << 30) -> None:
    """glibc's malloc gives each allocation above its mmap threshold (32 MB at most) fresh pages,
    page-faulted on first touch and unmapped on free: Inception's activations at batch 48 (260 MB a
    layer) spent a fifth of their time in the kernel on one core here (sys 2.6 s of 9.5 s; 0.1 s of
    6.9 s with this). Allocations up to `limit` are served from, and freed back to, the heap. Only the
    test processes do this: nfebench leaves the allocator of a user's process alone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl): its allocator has no such thresholds
            return
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, limit)
        libc.mallopt(M_TRIM_THRESHOLD, limit)


_keep_freed_memory()


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


# The spec's account of that stand-in: the SD-VAE's name and cost, fake_decoder's parameter count.
FAKE_DECODER = DecoderInfo("sd-vae", 7, 622.2)


# A full collection over the session's heap costs about a second late in the suite, and the timing
# runners collect after every cell (to release one model before the next is built): so each test runs
# with what earlier tests left alive frozen, and its collections scan only the objects it made.
_RSS_GROWTH = 1 << 30
_rss_after_full_collection = [psutil.Process().memory_info().rss]


@pytest.fixture(autouse=True, scope="module")
def _collect_when_a_module_grew_the_heap():
    """What module-scoped fixtures drop at the module's end is frozen by the next test unless it is
    collected here; a full collection is paid only once the process has grown by a GiB since the last."""
    yield
    if psutil.Process().memory_info().rss > _rss_after_full_collection[0] + _RSS_GROWTH:
        gc.collect()
        _rss_after_full_collection[0] = psutil.Process().memory_info().rss


@pytest.fixture(autouse=True)
def _collect_only_this_tests_objects(_collect_when_a_module_grew_the_heap):
    """Freeze the heap for one test; afterwards collect the test's own cycles (cheaply, the rest still
    frozen) and hand the frozen objects back to the oldest generation."""
    gc.freeze()
    yield
    gc.collect()
    gc.unfreeze()


@pytest.fixture
def fake_jax_family(monkeypatch):
    """Registers ``fake-jax`` (pixel) and ``fake-jax-latent`` (a torch sampler and its JAX
    port), and ``fake-jax-unported`` (no port), for one test; returns the list that grows by one each time the port's generate
    is traced."""
    from adapters.jax import sampler as jax_sampler

    registry.list_models()  # the built-in families are loaded before the registry is copied
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    for name, config in (("fake-jax", FakeConfig()), ("fake-jax-latent", FakeConfig(space="latent"))):
        registry.register(name, family="fake-jax", config=config,
                          build=lambda name, config, **kw: FakeTorchSampler(name, config), jax_port="fake_jax_port",
                          decoder=FAKE_DECODER if config.space == "latent" else None)
    registry.register("fake-jax-unported", family="fake-jax", config=FakeConfig(),  # no jax_port
                      build=lambda name, config, **kw: FakeTorchSampler(name, config))
    real_parts = jax_sampler.JaxSampler._decoder_parts
    monkeypatch.setattr(jax_sampler.JaxSampler, "_decoder_parts",
                        lambda self: fake_decoder() if self.info.family == "fake-jax" and
                        self.info.space == "latent" else real_parts(self))
    port = types.ModuleType("fake_jax_port")
    port.convert_params, port.make_generate, port.FAMILY_OPTIONS = convert_params, make_generate, ("scale",)
    port.load = jax_sampler.port_loader("fake_jax_port")
    monkeypatch.setitem(sys.modules, "fake_jax_port", port)
    TRACES.clear()
    return TRACES




# Official reference code (never committed): one sub-folder per repository, e.g. imf/ for
# Lyy-iiis/imeanflow (branch torch). By default the extracts beside the checkout, ../shared/reference-code
# (their README lists repositories, commits and licences); $NFEBENCH_REFERENCE_DIR overrides.
REFERENCE_DIR = Path(os.environ.get("NFEBENCH_REFERENCE_DIR",
                                    Path(__file__).resolve().parents[2] / "shared" / "reference-code"))
# Code that may not be redistributed (github:kyungmnlee/dmf publishes no licence) is fetched by each
# developer into their own cache, outside every checkout: ~/.cache/nfebench/reference/<folder>.
PRIVATE_REFERENCE_DIR = Path(os.environ.get("NFEBENCH_CACHE") or Path.home() / ".cache" / "nfebench") / "reference"
# .ci/run sets this: a parity test whose reference folder is present must run, never skip.
REQUIRE_REFERENCE = os.environ.get("NFEBENCH_REQUIRE_REFERENCE") == "1"


def import_reference(folder: str, repo: str, *modules: str) -> list[types.ModuleType]:
    """Import `modules` of the reference code in REFERENCE_DIR/folder, or skip the test naming what to fetch.

    The reference repositories use generic top-level names (`models`, `utils`), so the modules are
    imported with the folder first on sys.path and every module they brought in under those names is
    removed from sys.modules afterwards: two references never see each other's `models`.
    """
    root = next((r / folder for r in (REFERENCE_DIR, PRIVATE_REFERENCE_DIR) if (r / folder).is_dir()),
                REFERENCE_DIR / folder)
    if not root.is_dir():
        pytest.skip(f"reference code of github:{repo} not found at {root} or {PRIVATE_REFERENCE_DIR / folder} "
                    f"(extract it there, or set NFEBENCH_REFERENCE_DIR to the folder holding it); it is never "
                    f"committed")
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        loaded = [importlib.import_module(m) for m in modules]
    except ImportError as exc:
        why = f"reference code of github:{repo} at {root} needs {exc.name}, which is not installed"
        if REQUIRE_REFERENCE:
            pytest.fail(f"{why}; its folder is present, so its parity test must run (NFEBENCH_REQUIRE_REFERENCE=1)")
        pytest.skip(why)
    finally:
        sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            # A folder without __init__.py (imeanflow's `models`) is a namespace package: no __file__, only __path__.
            places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
            if any(str(p).startswith(str(root)) for p in places):
                del sys.modules[name]
    return loaded


@pytest.fixture
def reference_code():
    """`import_reference` for a test: ``imf, = reference_code("imf", "Lyy-iiis/imeanflow", "imf")``."""
    return import_reference


@pytest.fixture(scope="session")
def dinov2_weights(tmp_path_factory):
    """dinov2_vitl14's state_dict layout with random weights (nfebench's module, torch's default
    initialisation, tokens and LayerScale gammas perturbed from their constants), saved once under
    the official file name; returns its path."""
    from harness.metrics.dinov2 import VITL14, VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(**VITL14)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.1 + 0.05 * torch.randn(p.shape))
            elif name in ("cls_token", "pos_embed", "mask_token"):
                p.copy_(0.02 * torch.randn(p.shape))
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vitl14_pretrain.pth"
    torch.save(vit.state_dict(), path)
    return path


def pytest_collection_modifyitems(items):
    """The tests of the trained ci track come first: its training is the suite's longest piece of work,
    so under xdist the other workers' files fill the time beside it instead of waiting after it."""
    items.sort(key=lambda item: "ci_track" not in getattr(item, "fixturenames", ()))
