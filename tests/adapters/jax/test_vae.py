import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from adapters.jax.vae import DECODER_PARAMS, convert_decoder_params, make_decode
from adapters.vae import SCALING_FACTOR, SD_VAE_CONFIG, SDVAEDecoder
from adapters.api.errors import InputError

# Same structure as sd-vae (two up blocks instead of four: one upsampler, 16x16 images).
SMALL = dict(SD_VAE_CONFIG, block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
             up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8)


@pytest.fixture(scope="module")
def small():
    """A full small AutoencoderKL (encoder included), its latents and torch's decode of them."""
    torch.manual_seed(0)
    vae = AutoencoderKL(**SMALL).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # GroupNorm inits to scale 1, bias 0: perturb so a swap or a miss shows
        for p in vae.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    z = torch.randn(2, 4, 8, 8, generator=g)  # (N, 4, h, w), scaled latents
    with torch.no_grad():
        ref = vae.decode(z / SCALING_FACTOR).sample.clamp(-1, 1).numpy()  # (N, 3, 2h, 2w)
    return vae, z.numpy(), ref


def test_small_decoder_matches_diffusers(small):
    vae, z, ref = small
    assert (np.abs(ref) < 1).mean() > 0.5  # mostly unclamped, so the comparison means something
    params = convert_decoder_params(vae.state_dict(), config=SMALL)  # encoder keys are ignored
    out = jax.jit(make_decode(SMALL))(params, jnp.asarray(z))
    assert out.shape == (2, 3, 16, 16) and out.dtype == jnp.float32
    assert float(np.abs(np.asarray(out) - ref).max()) <= 1e-4


def test_bfloat16_params_decode_in_bfloat16(small):
    vae, z, ref = small
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16),
                                    convert_decoder_params(vae.state_dict(), config=SMALL))
    out = jax.jit(make_decode(SMALL))(params, jnp.asarray(z))  # float32 latents, cast to the params' dtype
    assert out.dtype == jnp.bfloat16
    err = np.abs(np.asarray(out, np.float32) - ref)
    assert float(err.max()) <= 0.06 and float(err.mean()) <= 0.01  # measured 0.019 and 0.003


@pytest.mark.slow
def test_full_size_matches_torch_adapter():
    """The real sd-vae configuration, through the torch adapter (no encoder in its state_dict)."""
    dec = SDVAEDecoder("random")
    params = convert_decoder_params(dec.vae.state_dict())
    assert sum(a.size for a in jax.tree_util.tree_leaves(params)) == dec.params == DECODER_PARAMS
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = dec(z).numpy()  # (1, 3, 64, 64)
    assert (np.abs(ref) < 1).mean() > 0.5
    out = jax.jit(make_decode())(params, jnp.asarray(z.numpy()))
    assert out.shape == (1, 3, 64, 64)
    assert float(np.abs(np.asarray(out) - ref).max()) <= 1e-4


def test_conversion_names_missing_unexpected_and_misshaped_tensors(small):
    sd = dict(small[0].state_dict())
    del sd["decoder.mid_block.attentions.0.to_k.bias"]
    sd["decoder.up_blocks.1.resnets.0.conv2.weight"] = torch.zeros(32, 32, 1, 1)
    sd["decoder.up_blocks.1.upsamplers.0.conv.weight"] = torch.zeros(32, 32, 3, 3)  # the last block has none
    with pytest.raises(InputError) as err:
        convert_decoder_params(sd, "tiny-vae", config=SMALL)
    msg = str(err.value)
    assert msg.startswith("tiny-vae:")
    assert "missing tensors: decoder.mid_block.attentions.0.to_k.bias" in msg
    assert "unexpected tensors: decoder.up_blocks.1.upsamplers.0.conv.weight" in msg
    assert ("mis-shaped tensors: decoder.up_blocks.1.resnets.0.conv2.weight "
            "(file (32, 32, 1, 1), expected (32, 32, 3, 3))") in msg


def test_config_the_port_lacks_is_refused():
    with pytest.raises(InputError, match="act_fn 'gelu'"):
        make_decode(dict(SMALL, act_fn="gelu"))
    with pytest.raises(InputError, match="only UpDecoderBlock2D"):
        convert_decoder_params({}, config=dict(SMALL, up_block_types=("AttnUpDecoderBlock2D",) * 2))
