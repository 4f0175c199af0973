"""`harness.settings`: the --checkpoint / --set / --options syntax of `nfebench bench`, and the NFE of what runs."""

import pytest

from adapters.api.errors import InputError
from harness.settings import (canonical_options, label, nfe_of, options_text, parse_checkpoints, parse_literal,
                              parse_option_sets, parse_overrides, parse_pairs, setting_options)

PAIR = ("biflow-mini", "tarflow-mini")


@pytest.mark.parametrize("raw, value", [("2", 2), ("-1", -1), ("1e-3", 0.001), ("0.5", 0.5), ("true", True),
                                        ("False", False), ("none", None), ("null", None), ("jacobi", "jacobi"),
                                        ("gs-jacobi", "gs-jacobi")])
def test_values_are_literals(raw, value):
    assert parse_literal(raw) == value and type(parse_literal(raw)) is type(value)


def test_pairs_and_tuples_survive_comma_splitting():
    assert parse_pairs("decoding=gs-jacobi,gs_segments=1/1/1/8,jacobi_tol=1e-3", "--options", tuples=True) == {
        "decoding": "gs-jacobi", "gs_segments": (1, 1, 1, 8), "jacobi_tol": 0.001}
    assert parse_pairs("jacobi_init=noise/zeros/noise/none", "--options", tuples=True) == {
        "jacobi_init": ("noise", "zeros", "noise", None)}
    assert parse_pairs("vae=/models/sd-vae", "--set") == {"vae": "/models/sd-vae"}  # --set has no tuples


@pytest.mark.parametrize("text, message", [
    ("", "needs key=value pairs"), (" , ", "needs key=value pairs"), ("decoding", "is not key=value"),
    ("decoding=", "is not key=value"), ("=jacobi", "is not key=value"), ("a=1,a=2", "a is given twice"),
])
def test_malformed_pairs_are_input_errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_pairs(text, "--options", tuples=True)


def test_checkpoints_one_model_plain_several_by_name():
    assert parse_checkpoints(["t.pt"], ("tarflow-mini",)) == {"tarflow-mini": "t.pt"}
    assert parse_checkpoints(["tarflow-mini=t.pt", "biflow-mini=b.pt"], PAIR) == {"tarflow-mini": "t.pt",
                                                                                 "biflow-mini": "b.pt"}
    assert parse_checkpoints(None, PAIR) == {}
    with pytest.raises(InputError, match="name the model: --checkpoint MODEL=PATH"):
        parse_checkpoints(["t.pt"], PAIR)
    with pytest.raises(InputError, match="'rf-mini' is not among the models"):
        parse_checkpoints(["rf-mini=r.pt"], PAIR)
    with pytest.raises(InputError, match="two checkpoints"):
        parse_checkpoints(["tarflow-mini=a.pt", "tarflow-mini=b.pt"], PAIR)


def test_set_applies_to_every_model_or_to_the_one_named():
    assert parse_overrides(["noise_std=0.2", "tarflow-mini:num_blocks=2,nvp=false"], PAIR) == {
        "biflow-mini": {"noise_std": 0.2}, "tarflow-mini": {"noise_std": 0.2, "num_blocks": 2, "nvp": False}}
    with pytest.raises(InputError, match="num_blocks is set twice"):
        parse_overrides(["num_blocks=2", "tarflow-mini:num_blocks=3"], PAIR)
    with pytest.raises(InputError, match="'sit-b2', which is not among the models"):
        parse_overrides(["sit-b2:depth=2"], PAIR)


def test_each_options_value_is_a_setting_of_its_own():
    sets = parse_option_sets(["tarflow-mini:decoding=sequential", "tarflow-mini:decoding=jacobi,jacobi_tol=1e-3"],
                             PAIR)
    assert sets == {"tarflow-mini": ({"decoding": "sequential"}, {"decoding": "jacobi", "jacobi_tol": 0.001})}
    assert parse_option_sets(["steps=2"], ("rf-mini", "sit-b2")) == {"rf-mini": ({"steps": 2},),
                                                                      "sit-b2": ({"steps": 2},)}
    with pytest.raises(InputError, match="given the setting decoding=jacobi twice"):
        parse_option_sets(["decoding=jacobi", "decoding=jacobi"], ("tarflow-mini",))


def test_labels_name_the_options_in_a_fixed_order():
    options = {"jacobi_tol": 1e-4, "decoding": "gs-jacobi", "gs_segments": (1, 1, 8, 1), "denoise": False}
    assert options_text(options) == "decoding=gs-jacobi,denoise=false,gs_segments=1/1/8/1,jacobi_tol=0.0001"
    assert label("tarflow-mini", options) == f"tarflow-mini[{options_text(options)}]"
    assert label("tarflow-mini", {}) == "tarflow-mini"
    # what is written parses back to the same options
    assert parse_pairs(options_text(options), "--options", tuples=True) == options


def test_nfe_counts_what_runs():
    # Rectified Flow: guidance adds the unconditional pass of each step (README, Conventions)
    assert nfe_of("rf-mini") == 1 and nfe_of("rf-mini", guidance=0.5) == 2 and nfe_of("rf-mini", guidance=0.0) == 1
    assert nfe_of("rf-mini", options={"steps": 4}, guidance=0.5) == 8
    # TARFlow: one pass, two with guidance, one more for the denoising step unless it is turned off
    assert nfe_of("tarflow-mini") == 2 and nfe_of("tarflow-mini", guidance=1.0) == 3
    assert nfe_of("tarflow-mini", options={"denoise": False}) == 1
    assert nfe_of("tarflow-mini", options={"decoding": "jacobi"}) == 2  # not a config field: the convention's count
    assert nfe_of("biflow-mini", guidance=1.0) == 1  # guidance is trained into BiFlow


def test_a_setting_at_the_defaults_is_the_default_setting():
    from adapters import load_sampler

    tarflow = load_sampler("tarflow-mini", device="meta")
    assert canonical_options(tarflow, {"decoding": "sequential", "jacobi_tol": 1e-4, "denoise": True}) == {
        "denoise": True}  # denoise's default is None (the config's value): True is not the same text
    assert setting_options(tarflow, {"decoding": "sequential"}) == {}
    jacobi = {"decoding": "jacobi", "jacobi_tol": 1e-4}  # the default tolerance, still named
    assert setting_options(tarflow, jacobi) == jacobi and canonical_options(tarflow, jacobi) == {"decoding": "jacobi"}
