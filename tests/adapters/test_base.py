"""The checks families share (adapters/base.py): one wording per check, whatever the family."""

import pytest

from adapters.api.errors import InputError
from adapters.base import (
    check_guided_labels,
    check_heads,
    check_num_steps,
    check_patch_grid,
    check_positive_int,
)
from adapters.builder import sample_fields


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
