"""The checks families share (adapters/base.py): one wording per check, whatever the family; the
sampler's decoder hook and the derived step noise."""

import pytest
import torch

from adapters.api.errors import InputError
from adapters.api.sampler import RANDOM_INIT, ModelInfo
from adapters.base import (
    TorchSampler,
    check_guided_labels,
    check_heads,
    check_num_steps,
    check_patch_grid,
    check_positive_int,
    check_step_noise,
    derive_step_noise,
)
from adapters.builder import sample_fields
from adapters.vae import SD_VAE_DECODER, SDVAEDecoder


@pytest.mark.parametrize("value", [0, -2, 1.5, 2.0, True, "3", None])
def test_positive_int_refuses_everything_but_positive_ints(value):
    with pytest.raises(InputError, match=rf"m: steps must be a positive integer, got {value!r}"):
        check_positive_int("m", "steps", value)


def test_positive_int_and_num_steps_pass_positive_ints_through():
    assert check_positive_int("m", "steps", 3) == 3
    assert check_num_steps("m", 1) == 1
    with pytest.raises(InputError, match="m: num_steps must be a positive integer, got 0"):
        check_num_steps("m", 0)


def test_guidance_without_labels_is_refused_only_when_guided():
    check_guided_labels("m", 0.0, None)
    check_guided_labels("m", 2.0, [1, 2])
    with pytest.raises(InputError, match="m: guidance 2.0 needs class labels; pass labels or guidance=0"):
        check_guided_labels("m", 2.0, None)


def test_grid_and_head_checks():
    check_patch_grid("m", 32, 2)
    check_heads("m", 768, 12)
    with pytest.raises(InputError, match="m: input_size 9 is not a multiple of patch_size 2"):
        check_patch_grid("m", 9, 2)
    with pytest.raises(InputError, match="m: hidden_size 100 is not divisible by num_heads 12"):
        check_heads("m", 100, 12)


def test_sample_fields_decode_latents_at_eight_times_the_side():
    assert sample_fields("latent", 4, 32) == {"space": "latent", "sample_shape": (4, 32, 32), "image_size": 256}
    assert sample_fields("pixel", 3, 64) == {"space": "pixel", "sample_shape": (3, 64, 64), "image_size": 64}
    assert sample_fields("latent", 4, 32, image_size=512)["image_size"] == 512


class _Halver:
    """A decoder that is not an SD-VAE: images are half the latents, 2x upsampled."""

    weights, params, calls = "sha256:halver", 7, 0

    def __call__(self, latents):
        _Halver.calls += 1
        return torch.nn.functional.interpolate(latents[:, :3] / 2, scale_factor=2.0)


class _LatentSampler(TorchSampler):
    def _generate(self, noise, labels, guidance):
        return noise


class _OwnDecoderSampler(_LatentSampler):
    def make_decoder(self):
        return _Halver()


def _latent_info(name="m"):
    return ModelInfo(name=name, family="toy", params=1, nfe=1, sequential_steps=1, space="latent",
                     sample_shape=(4, 2, 2), image_size=4, num_classes=0, gflops=0.0, weights=RANDOM_INIT)


def test_a_family_decoder_replaces_the_sd_vae():
    s = _OwnDecoderSampler(_latent_info(), torch.nn.Identity(), device="cpu", dtype=torch.float32)
    x = torch.full((1, 4, 2, 2), 4.0)
    _Halver.calls = 0
    assert torch.equal(s.decode(x), torch.full((1, 3, 4, 4), 2.0))
    assert s.decoder is s.decoder and s.decoder_weights == "sha256:halver" and s.decoder.params == 7  # built once
    assert _Halver.calls == 1


def test_the_default_decoder_is_the_sd_vae(monkeypatch):
    monkeypatch.setenv("NFEBENCH_VAE", "random")
    s = _LatentSampler(_latent_info(), torch.nn.Identity(), device="meta", dtype=torch.float32)
    assert isinstance(s.decoder, SDVAEDecoder) and s.decoder_weights == RANDOM_INIT
    assert s.decoder.params == SD_VAE_DECODER.params


def test_derived_step_noise_streams_are_the_tags():
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b = derive_step_noise(z, 3, tag=b"one"), derive_step_noise(z, 3, tag=b"two")
    assert a.shape == (2, 2, 4, 8, 8) and torch.equal(a, derive_step_noise(z, 3, tag=b"one"))
    assert abs(float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])) < 0.05  # independent streams
    assert torch.equal(derive_step_noise(z[1:], 3, tag=b"one"), a[1:])  # each sample's own
    assert derive_step_noise(z, 1, tag=b"one").shape == (2, 0, 4, 8, 8)


def test_step_noise_of_the_wrong_shape_is_named():
    z = torch.zeros(2, 4, 8, 8)
    eps = torch.zeros(2, 1, 4, 8, 8)
    assert check_step_noise("m", eps, z, 2) is eps
    with pytest.raises(InputError, match=r"m: step_noise has shape \(2, 1, 4, 8, 8\), expected \(2, 2, 4, 8, 8\)"):
        check_step_noise("m", eps, z, 3)
    with pytest.raises(InputError, match=r"m: step_noise must be a floating-point tensor of shape \(2, 1, 4, 8, 8\)"):
        check_step_noise("m", eps.long(), z, 2)
