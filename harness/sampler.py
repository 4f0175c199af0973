"""The `Sampler` contract, re-exported from `adapters.api.sampler`, where it now lives (the
contract sits at the bottom of the layers and imports nothing of nfebench)."""

from adapters.api.sampler import (LATENT_DOWNSAMPLE, RANDOM_INIT, SPACES, ModelInfo, NonFiniteSampleError, Sampler,
                                  check_finite, check_generate_inputs, check_guidance, check_space, decoded_side,
                                  weights_with_decoder)

__all__ = ["LATENT_DOWNSAMPLE", "RANDOM_INIT", "SPACES", "ModelInfo", "NonFiniteSampleError", "Sampler",
           "check_finite", "check_generate_inputs", "check_guidance", "check_space", "decoded_side",
           "weights_with_decoder"]
