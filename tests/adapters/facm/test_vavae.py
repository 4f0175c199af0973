"""The VA-VAE decoder (adapters/facm/vavae.py) against FACM's ``ldit/autoencoder.py`` (github:ali-vilab/FACM,
never committed): sizes, names, FLOPs and the decode, from a folder laid out like FACM's ``cache/`` holding
random non-zero weights in the released file's layout."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adapters import load_sampler
from adapters.api.checkpoint import CheckpointWarning, file_sha256
from adapters.api.errors import InputError
from adapters.api.sampler import RANDOM_INIT
from adapters.facm import vavae
from adapters.facm.vavae import STATS_FILE, VA_VAE_DECODER, VAE_FILE, VAVAEDecoder

TOL = 1e-4
DECODER_PARAMS = 41_418_659  # decoder + post_quant_conv of the f16d32 VA-VAE


def rel_dev(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


def official_vae(ref, device=None):
    """``AutoencoderKL(embed_dim=32, ch_mult=(1, 1, 2, 2, 4))``, as model_manager.py's VA_VAE_FromConfig builds it."""
    with torch.device(device or "cpu"):
        return ref.autoencoder.AutoencoderKL(embed_dim=32, ch_mult=(1, 1, 2, 2, 4)).eval()


@pytest.fixture
def cache(ref, randomize_constants, tmp_path):
    """(the official VAE with random non-zero weights, its latent mean and std, a cache/ folder holding
    them): the VAE file as LightningDiT's VA-VAE training saves it, a Lightning ``state_dict`` with the
    encoder, a DINOv2 ``foundation_model`` and the ``loss`` networks beside the decoder."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = official_vae(ref)
        randomize_constants(vae, 0)  # GroupNorm weights and biases (convolution biases are random already)
        mean, std = torch.randn(1, 32, 1, 1), 0.5 + torch.rand(1, 32, 1, 1)
    sd = dict(vae.state_dict())
    sd["foundation_model.model.blocks.0.attn.qkv.weight"] = torch.randn(48, 16)
    sd["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(8, 3, 3, 3)
    torch.save({"state_dict": sd, "epoch": 49, "global_step": 250000}, tmp_path / VAE_FILE)
    torch.save({"mean": mean, "std": std}, tmp_path / STATS_FILE)
    return vae, mean, std, tmp_path


def official_decode(vae, x, mean, std):
    """utils.py's ``decode_image``: z = x * std + mean, ``decode_to_images`` (AutoencoderKL.decode), then clamp."""
    with torch.no_grad():
        return vae.decode(x * std + mean)


def test_param_count_and_keys_equal_the_official_decoder(ref):
    theirs = official_vae(ref, "meta")
    parts = {k: v for k, v in theirs.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
    count = sum(v.numel() for v in parts.values())
    ours = VAVAEDecoder(None, device="meta")
    print(f"VA-VAE decoder: {ours.params:,} parameters here, {count:,} in FACM's module")
    assert ours.params == count == DECODER_PARAMS == VA_VAE_DECODER.params
    assert {k: tuple(v.shape) for k, v in ours.vae.state_dict().items()} == {k: tuple(v.shape) for k, v in parts.items()}
    assert len(theirs.decoder.up[4].attn) == 3 and len(ours.vae.decoder.up[4].attn) == 3  # attention at 16x16
    assert all(len(ours.vae.decoder.up[i].attn) == 0 for i in range(4))


def test_decode_gflops_are_the_official_decoders(ref):
    """One 256 px decode (a 32x16x16 latent), multiply-add = 2, as FlopCounterMode counts it."""
    theirs, ours = official_vae(ref, "meta"), VAVAEDecoder(None, device="meta")
    with torch.device("meta"):
        z = torch.empty(1, 32, 16, 16)
        with FlopCounterMode(display=False) as counter:
            theirs.decode(z)
        with FlopCounterMode(display=False) as own:
            ours.vae.decode(z)
    print(f"VA-VAE decode at 256 px: {counter.get_total_flops() / 1e9:.2f} GFLOPs counted (SD-VAE: 622.2)")
    assert own.get_total_flops() == counter.get_total_flops()
    assert VA_VAE_DECODER.gflops_256 * 1e9 == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_decode_matches_the_official_decoder(cache):
    """Every weight of the released layout through a small latent (4x4 -> 64 px; the network is convolutional
    and its attention placement is fixed at construction)."""
    vae, mean, std, folder = cache
    with pytest.warns(CheckpointWarning, match=r"ignored the encoder: \d+ tensors, foundation_model.\* \(DINOv2.*: 1 "
                                               r"tensors, loss.\* \(LPIPS and the discriminator\): 2 tensors, "
                                               r"quant_conv \(encoding only\): 2 tensors"):
        ours = VAVAEDecoder(folder)
    assert ours.weights == f"{file_sha256(folder / VAE_FILE)}#state_dict+stats:{file_sha256(folder / STATS_FILE)}"
    x = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(1))
    theirs = official_decode(vae, x, mean, std)  # (2, 3, 64, 64), not clamped
    with torch.no_grad():
        dev = rel_dev(ours.vae.decode(x * ours.std + ours.mean), theirs)
    print(f"VA-VAE decode: relative deviation {dev:.2e}")
    assert dev <= TOL
    images = ours(x)
    assert images.shape == (2, 3, 64, 64)
    assert float((images - theirs.clamp(-1, 1)).abs().max()) <= TOL * float(theirs.abs().max())
    assert 0.2 < float((theirs.abs() < 1).float().mean())  # the clamp leaves most pixels: the check has teeth
    assert rel_dev(official_decode(vae, x, 0.0, 1.0), theirs) > 0.05  # the latent statistics matter


@pytest.mark.slow
def test_full_size_decode_matches_the_official_decoder(cache):
    """A 32x16x16 latent to a 256x256 image, the decode every FACM sample goes through."""
    vae, mean, std, folder = cache
    ours = VAVAEDecoder(folder)
    x = torch.randn(1, 32, 16, 16, generator=torch.Generator().manual_seed(2))
    theirs = official_decode(vae, x, mean, std)
    with torch.no_grad():
        dev = rel_dev(ours.vae.decode(x * ours.std + ours.mean), theirs)
    print(f"VA-VAE decode at 256 px: relative deviation {dev:.2e}")
    assert dev <= TOL


def test_sampler_decodes_with_the_va_vae(cache):
    vae, mean, std, folder = cache
    s = load_sampler("facm-xl1", hidden_size=64, depth=2, num_heads=4, input_size=4, vae=str(folder))
    assert s.info.image_size == 64 and s.decoder_weights.startswith(file_sha256(folder / VAE_FILE))
    x = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(3))
    assert rel_dev(s.decode(x), official_decode(vae, x, mean, std).clamp(-1, 1)) <= TOL
    assert s.decoder.params == DECODER_PARAMS


def test_no_folder_is_a_random_decoder_that_says_so():
    s = load_sampler("facm-xl1", hidden_size=64, depth=2, num_heads=4, input_size=2)
    assert s.decoder_weights == RANDOM_INIT and isinstance(s.decoder, VAVAEDecoder)
    assert s.decode(torch.randn(1, 32, 2, 2)).shape == (1, 3, 32, 32)
    assert VAVAEDecoder("random").weights == RANDOM_INIT


@pytest.mark.parametrize("missing", [VAE_FILE, STATS_FILE])
def test_folder_missing_a_file_is_an_input_error(cache, missing):
    folder = cache[3]
    (folder / missing).unlink()
    with pytest.raises(InputError, match=rf"VA-VAE folder {folder} has no {missing}; it needs {VAE_FILE} and "
                                         rf"{STATS_FILE}"):
        VAVAEDecoder(folder)
    s = load_sampler("facm-xl1", hidden_size=64, depth=2, num_heads=4, input_size=2, vae=str(folder))
    with pytest.raises(InputError, match=rf"has no {missing}"):  # met when the decoder is first needed
        s.decode(torch.zeros(1, 32, 2, 2))


def test_bad_folder_contents_are_input_errors(cache, tmp_path):
    with pytest.raises(InputError, match=r"VA-VAE folder .*nowhere does not exist"):
        VAVAEDecoder(tmp_path / "nowhere")
    folder = cache[3]
    torch.save({"mean": torch.zeros(32), "std": torch.ones(32)}, folder / STATS_FILE)
    with pytest.raises(InputError, match=r"must hold 'mean' and 'std' tensors of shape \(1, 32, 1, 1\).*'mean': \(32,\)"):
        VAVAEDecoder(folder)
    torch.save({"state_dict": {"decoder.conv_in.weight": torch.zeros(512, 32, 3, 3)}}, folder / VAE_FILE)
    with pytest.raises(InputError, match=r"missing tensors: decoder.conv_in.bias"):
        VAVAEDecoder(folder)


def test_docstring_examples_run():
    assert doctest.testmod(vavae).failed == 0
