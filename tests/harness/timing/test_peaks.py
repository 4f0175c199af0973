"""Device peaks, MFU arithmetic, and FLOPs per image checked against FlopCounterMode."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import adapters.base
from adapters import list_models, load_sampler, model_info
from adapters.api.sampler import DecoderInfo
from adapters.api.seeding import sample_labels
from adapters.vae import SD_VAE_CONFIG, SD_VAE_DECODER
from harness.timing.peaks import (
    PEAK_FLOPS,
    device_key,
    flops_per_image,
    mfu,
    peak_flops,
)


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"),
    ("TPU v4", "TPU v4"),
    ("TPU v5 lite", "TPU v5e"),
    ("TPU v5e", "TPU v5e"),
    ("TPU v5", "TPU v5p"),
    ("TPU v5p", "TPU v5p"),
    ("AMD EPYC", None),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_device_names_map_to_table_entries(name, key):
    assert device_key(name) == key


def test_peaks_are_dense_data_sheet_figures():
    # NVIDIA prints sparse tensor-core figures (2x dense): H100 SXM bf16 1979 -> 989.5.
    assert peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.5e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "float16") == 312e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "float32") == 19.5e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "float32", tf32=True) == 156e12
    assert peak_flops("TPU v4", "bfloat16") == 275e12
    assert peak_flops("TPU v4", "float32") is None  # not published
    assert peak_flops("AMD EPYC", "float32") is None  # CPUs: left blank
    for key, peaks in PEAK_FLOPS.items():  # tensor cores: bf16 = fp16 >= tf32 >= fp32
        if "float16" in peaks:
            assert peaks["bfloat16"] == peaks["float16"] >= peaks["tf32"] >= peaks["float32"], key


def test_mfu_of_a_known_flop_count():
    # 4 images of 100 GFLOPs in 2 ms on a 989.5 TFLOP/s card: 2e14 FLOP/s achieved.
    assert mfu(4 * 100e9, 2e-3, 989.5e12) == pytest.approx(2e14 / 989.5e12)
    assert mfu(1e12, 1.0, 1e12) == 1.0


def test_flops_per_image_counts_nfe_and_the_decoder():
    info = model_info("rf-mini", num_steps=4, input_size=32, in_channels=4, space="latent")  # 4 Euler steps: nfe counts each (x2 with guidance)
    assert info.image_size == 256
    generator, sd_vae = info.gflops * 1e9 * info.nfe, 622.2e9
    assert flops_per_image(info) == pytest.approx(generator)
    assert flops_per_image(info, SD_VAE_DECODER) == pytest.approx(generator)  # no decode asked for
    assert flops_per_image(info, SD_VAE_DECODER, decode=True) == pytest.approx(generator + sd_vae)
    assert flops_per_image(info, None, decode=True) == pytest.approx(generator)  # no decoder: pixel space
    assert flops_per_image(info, SD_VAE_DECODER, generator=False, decode=True) == pytest.approx(sd_vae)
    other = DecoderInfo("other-vae", 1, 100.0)  # another decoder: its own cost, scaled by area
    assert flops_per_image(info, other, generator=False, decode=True) == pytest.approx(100e9)
    assert SD_VAE_DECODER.gflops(512) == pytest.approx(4 * SD_VAE_DECODER.gflops(256))


# Autoregressive models (TARFlow: blocks x (T-1) single-token steps, and a denoising step
# whose autograd.grad FlopCounterMode cannot follow) are left to tests/adapters: counting
# their full sampling loop here would take minutes. Every other registered model is counted.
PARALLEL = [m for m in list_models() if model_info(m).sequential_steps <= 16]


@pytest.mark.parametrize("model", PARALLEL)
def test_gflops_times_nfe_matches_counted_sampling(model, monkeypatch):
    """info.gflops * info.nfe against FlopCounterMode over a whole `generate` call (the
    meta device: nothing is computed, every matmul and attention kernel is counted)."""
    monkeypatch.setattr(adapters.base, "check_finite", lambda x, what: x)  # meta tensors have no values
    sampler = load_sampler(model, device="meta")
    info = sampler.info
    n = 2
    noise = torch.zeros(n, *info.sample_shape)
    labels = sample_labels(0, range(n), info.num_classes)
    with FlopCounterMode(display=False) as counter:
        sampler.generate(noise, labels)
    assert info.gflops * 1e9 * info.nfe == pytest.approx(counter.get_total_flops() / n, rel=0.03)


def test_every_family_but_the_autoregressive_one_is_counted():
    families = {model_info(m).family for m in list_models()}
    counted = {model_info(m).family for m in PARALLEL}
    assert families - counted <= {"tarflow"}
    assert {"biflow", "rectified-flow", "meanflow"} <= counted


def test_the_sd_vae_decoder_info_matches_the_network():
    """The SD-VAE's `DecoderInfo` (what the timing rows count) against the network it describes:
    FLOPs of one 256 px decode by FlopCounterMode, parameters of decoder + post_quant_conv."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**SD_VAE_CONFIG)
    with FlopCounterMode(display=False) as counter:
        vae.decode(torch.empty(1, 4, 32, 32, device="meta"))
    assert SD_VAE_DECODER.gflops(256) * 1e9 == pytest.approx(counter.get_total_flops(), rel=0.03)
    params = sum(p.numel() for m in (vae.decoder, vae.post_quant_conv) for p in m.parameters())
    assert (SD_VAE_DECODER.name, SD_VAE_DECODER.params) == ("sd-vae", params)
