import math

import pytest
import torch

from adapters.api.errors import InputError
from adapters import model_info
from adapters.api.sampler import (ModelInfo, NonFiniteSampleError, check_finite, check_generate_inputs, check_space,
                             decoded_side)

INFO = ModelInfo(name="toy", family="toy", params=1, nfe=1, sequential_steps=1, space="pixel",
                 sample_shape=(3, 8, 8), image_size=8, num_classes=10, gflops=0.0, weights="random-init")


def test_valid_inputs_pass():
    check_generate_inputs(INFO, torch.zeros(2, 3, 8, 8), torch.tensor([0, 9]))
    check_generate_inputs(INFO, torch.zeros(2, 3, 8, 8), None)


@pytest.mark.parametrize("noise, labels, message", [
    (torch.zeros(2, 3, 8, 9), None, "noise has shape"),
    (torch.zeros(3, 8, 8), None, "noise has shape"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.long), None, "floating-point"),
    (torch.zeros(2, 3, 8, 8), torch.tensor([0, 10]), r"\[0, 10\)"),
    (torch.zeros(2, 3, 8, 8), torch.tensor([-1, 0]), r"\[0, 10\)"),
    (torch.zeros(2, 3, 8, 8), torch.tensor([0]), "labels must have shape"),
    (torch.zeros(2, 3, 8, 8), torch.tensor([0.0, 1.0]), "integers"),
])
def test_bad_inputs_name_the_problem(noise, labels, message):
    with pytest.raises(InputError, match=message):
        check_generate_inputs(INFO, noise, labels)


def test_non_finite_samples_are_reported_with_rows():
    x = torch.zeros(4, 2)
    x[1, 0] = math.nan
    x[3, 1] = math.inf
    with pytest.raises(NonFiniteSampleError, match=r"2 of 4 samples \(batch rows \[1, 3\]"):
        check_finite(x, "toy")
    assert check_finite(torch.ones(2, 2), "toy") is not None


def test_model_info_to_dict_is_json_ready():
    d = INFO.to_dict()
    assert d["sample_shape"] == [3, 8, 8] and d["weights"] == "random-init"


def test_space_is_pixel_or_latent_and_a_latent_decodes_at_eight_times_its_side():
    assert check_space("toy", "pixel") == "pixel" and check_space("toy", "latent") == "latent"
    with pytest.raises(InputError, match="toy: space must be 'pixel' or 'latent', got 'voxel'"):
        check_space("toy", "voxel")
    assert decoded_side("latent", 32) == 256 and decoded_side("pixel", 8) == 8


@pytest.mark.parametrize("model_id", ["tarflow-mini", "biflow-mini", "rf-mini"])
def test_every_family_refuses_an_unknown_space(model_id):
    with pytest.raises(InputError, match=f"{model_id}: space must be"):
        model_info(model_id, space="voxel")


def test_the_python_api_takes_what_a_user_passes():
    """Lists, numpy arrays and any integer dtype for labels; an empty batch gives an empty
    result; non-finite noise is the input's fault (said before any network runs)."""
    import numpy as np

    from adapters import load_sampler
    from adapters.api.errors import InputError

    s = load_sampler("rf-mini")
    noise, labels = torch.randn(3, 3, 8, 8), torch.tensor([1, 2, 3])
    ref = s.generate(noise, labels)
    assert torch.equal(s.generate(noise.numpy(), labels.tolist()), ref)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        assert torch.equal(s.generate(noise, labels.to(dtype)), ref)
    assert s.generate(noise[:0], labels[:0]).shape == (0, 3, 8, 8)
    bad = noise.clone()
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match=r"the noise passed in holds NaN or Inf in 1 of 3 samples \(batch rows \[2\]\)"):
        s.generate(bad, labels)
    with pytest.raises(InputError, match="labels must be integers"):
        s.generate(noise, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match="noise must be a tensor, a numpy array or a list of numbers, got str"):
        s.generate("noise", labels)
