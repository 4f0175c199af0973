import pytest
import torch
from diffusers import AutoencoderKL

from adapters.api.checkpoint import file_sha256
from adapters.vae import SD_VAE_CONFIG, SDVAEDecoder, resolve_vae_source
from adapters.api.errors import InputError
from adapters.api.sampler import RANDOM_INIT

TINY = dict(SD_VAE_CONFIG, block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, sample_size=16)


def test_sd_vae_decoder_size_and_shapes(monkeypatch):
    monkeypatch.setenv("NFEBENCH_VAE", "random")
    dec = SDVAEDecoder()
    assert dec.weights == RANDOM_INIT
    assert dec.params == 49_490_199  # sd-vae-ft-ema decoder + post_quant_conv
    assert dec.vae.encoder is None
    img = dec(torch.randn(1, 4, 32, 32))
    assert img.shape == (1, 3, 256, 256)
    assert float(img.abs().max()) <= 1.0


def test_local_folder_weights_load_and_are_fingerprinted(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ref = AutoencoderKL(**TINY).eval()
    ref.save_pretrained(tmp_path / "vae")
    monkeypatch.setenv("NFEBENCH_VAE", str(tmp_path / "vae"))
    dec = SDVAEDecoder()
    assert dec.weights == file_sha256(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = ref.decode(z / ref.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.allclose(dec(z), expected, atol=1e-6)


def test_hub_cache_is_read_offline(tmp_path, monkeypatch):
    """A repo in the local Hugging Face cache is found without network."""
    from huggingface_hub import constants

    repo_dir = tmp_path / "hub" / "models--someone--tiny-vae"
    snapshot = repo_dir / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    AutoencoderKL(**TINY).save_pretrained(snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NFEBENCH_VAE", "someone/tiny-vae")
    assert resolve_vae_source(None) == str(snapshot)


def test_named_source_that_is_absent_is_refused(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("NFEBENCH_VAE", "nobody/no-such-vae")
    with pytest.raises(InputError, match="neither a local folder nor in the Hugging Face cache"):
        SDVAEDecoder()
    monkeypatch.delenv("NFEBENCH_VAE")
    assert resolve_vae_source(None) is None  # default repo not cached: random weights, said in `weights`


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        resolve_vae_source(str(tmp_path))


def test_random_decoder_weights_are_reproducible(monkeypatch):
    monkeypatch.setenv("NFEBENCH_VAE", "random")
    a, b = SDVAEDecoder(), SDVAEDecoder()
    assert torch.equal(a.vae.decoder.conv_in.weight, b.vae.decoder.conv_in.weight)


def test_per_channel_latent_normalisation_and_the_family_repo(tmp_path, monkeypatch):
    """A family that normalised latents per channel (x = (z - m) / s, as iMF does) decodes z = x * s + m,
    and its VAESpec's repo is the one looked up in the cache."""
    from huggingface_hub import constants

    from adapters.vae import LatentNorm, VAESpec

    mean, std = torch.tensor([0.9, -0.3, 0.2, 0.4]), torch.tensor([4.9, 5.3, 3.9, 4.0])
    torch.manual_seed(0)
    ref = AutoencoderKL(**TINY).eval()
    snapshot = tmp_path / "hub" / "models--someone--mse-vae" / "snapshots" / ("0" * 40)
    ref.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("NFEBENCH_VAE", raising=False)
    spec = VAESpec("someone/mse-vae", LatentNorm(scale=tuple((1 / std).tolist()), shift=tuple(mean.tolist())))
    dec = SDVAEDecoder(spec=spec)
    assert dec.weights.startswith("sha256:")
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = ref.decode(x * std.view(-1, 1, 1) + mean.view(-1, 1, 1)).sample.clamp(-1, 1)
    assert torch.allclose(dec(x), expected, atol=1e-5)
