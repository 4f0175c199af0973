"""The grid of `nfebench sweep` expands to the right settings, and refuses bad axes, values and duplicates.

On the meta device (nothing allocated): rf-mini (`num_steps`), biflow-mini (guidance only) and
tarflow-mini (its decodings and guidance), random weights.
"""

import pytest

from adapters import load_sampler
from adapters.api.errors import InputError
from harness.sweep.grid import (
    GRID,
    OPTIONS,
    expand_grid,
    parse_axis,
    parse_baselines,
    stored_setting,
)

MODELS = ("rf-mini", "biflow-mini", "tarflow-mini")


@pytest.fixture(scope="module")
def samplers():
    return {m: load_sampler(m, device="meta") for m in MODELS}


def grid(samplers, *axes, options=None, models=MODELS):
    return expand_grid(models, [parse_axis(a, models) for a in axes], options or {}, samplers)


def labels(settings):
    return [s.label for s in settings]


def test_a_model_axis_and_a_shared_axis_make_the_product_in_the_order_given(samplers):
    g = grid(samplers, "rf-mini:num_steps=1,2,4", "guidance=0,1")
    assert labels(g["rf-mini"]) == [f"rf-mini[guidance={g_},num_steps={k}]" for k in (1, 2, 4) for g_ in ("0.0", "1.0")]
    # guidance applies to every model that has it; integers of a float option are floats
    assert labels(g["biflow-mini"]) == ["biflow-mini[guidance=0.0]", "biflow-mini[guidance=1.0]"]
    assert [s.guidance for s in g["biflow-mini"]] == [0.0, 1.0]
    assert all(isinstance(s.guidance, float) for s in g["biflow-mini"])
    assert g["rf-mini"][0].options == {"num_steps": 1, "guidance": 0.0}
    assert g["rf-mini"][0].generate_options == {"num_steps": 1} and {s.source for s in g["rf-mini"]} == {GRID}


def test_options_settings_follow_the_grid_and_a_model_without_either_runs_its_defaults(samplers):
    g = grid(samplers, "tarflow-mini:guidance=0,2", options={"tarflow-mini": ({"decoding": "jacobi",
                                                                              "jacobi_tol": 1e-3},)})
    assert labels(g["tarflow-mini"]) == ["tarflow-mini[guidance=0.0]", "tarflow-mini[guidance=2.0]",
                                         "tarflow-mini[decoding=jacobi,jacobi_tol=0.001]"]
    assert g["tarflow-mini"][-1].source == OPTIONS
    assert labels(g["rf-mini"]) == ["rf-mini"] and g["rf-mini"][0].options == {}


def test_options_at_their_defaults_are_dropped_so_one_setting_has_one_name(samplers):
    # decoding=sequential is TARFlow's default: crossed with jacobi it names the default decoding
    g = grid(samplers, "tarflow-mini:decoding=sequential,jacobi")
    assert labels(g["tarflow-mini"]) == ["tarflow-mini", "tarflow-mini[decoding=jacobi]"]
    with pytest.raises(InputError, match=r"tarflow-mini\[decoding=jacobi\] is given twice \(by --grid "
                                         r"tarflow-mini:decoding=sequential,jacobi and by --options decoding=jacobi;"):
        grid(samplers, "tarflow-mini:decoding=sequential,jacobi", options={"tarflow-mini": ({"decoding": "jacobi"},)})


def test_tuples_are_written_with_a_slash(samplers):
    g = grid(samplers, "tarflow-mini:gs_segments=1/1/1/8,1/1/8/1", "tarflow-mini:decoding=gs-jacobi")
    assert [s.options["gs_segments"] for s in g["tarflow-mini"]] == [(1, 1, 1, 8), (1, 1, 8, 1)]
    assert g["tarflow-mini"][0].json()["gs_segments"] == [1, 1, 1, 8]
    assert stored_setting("tarflow-mini", g["tarflow-mini"][0].json()) == g["tarflow-mini"][0]


@pytest.mark.parametrize("axes, message", [
    (("rf-mini:decoding=jacobi",), r"rf-mini has no axis decoding; its axes: num_steps, guidance"),
    (("temperature=1,2",), r"no model of --models has the axis temperature \(rf-mini: num_steps, guidance; "
                           r"biflow-mini: guidance; tarflow-mini: "),
    (("rf-mini:num_steps=",), r"the axis num_steps has no values"),
    (("rf-mini:num_steps=1,,2",), r"the axis num_steps has an empty value"),
    (("rf-mini:num_steps",), r"is not \[MODEL:\]AXIS=V1,V2"),
    (("rf-mini:num_steps=1,1",), r"the setting rf-mini\[num_steps=1\] is given twice \(by --grid rf-mini:num_steps=1,1;"),
    (("rf-mini:num_steps=1.5",), r"rf-mini: num_steps must be an integer"),
    (("biflow-mini:guidance=big",), r"biflow-mini: guidance must be a finite number"),
    (("rf-mini:guidance=0", "guidance=1"), r"rf-mini's axis guidance is given twice"),
    (("sit-b2:num_steps=1",), r"names 'sit-b2', which is not among the models"),
])
def test_a_bad_axis_is_an_input_error_naming_what_to_do(samplers, axes, message):
    with pytest.raises(InputError, match=message):
        grid(samplers, *axes)


def test_the_baseline_is_the_first_setting_unless_one_is_named(samplers):
    g = grid(samplers, "rf-mini:num_steps=1,2,4", "biflow-mini:guidance=0,1")
    base, named = parse_baselines(None, g, samplers)
    assert base["rf-mini"].label == "rf-mini[num_steps=1]" and base["tarflow-mini"].label == "tarflow-mini"
    assert named == set()
    base, named = parse_baselines(["rf-mini:num_steps=4", "biflow-mini:guidance=1"], g, samplers)
    assert (base["rf-mini"].label, base["biflow-mini"].label, named) == (
        "rf-mini[num_steps=4]", "biflow-mini[guidance=1.0]", {"rf-mini", "biflow-mini"})
    assert parse_baselines(["tarflow-mini:defaults"], g, samplers)[0]["tarflow-mini"].label == "tarflow-mini"
    with pytest.raises(InputError, match=r"rf-mini\[num_steps=8\] is not among rf-mini's settings"):
        parse_baselines(["rf-mini:num_steps=8"], g, samplers)
    with pytest.raises(InputError, match="with several models name one"):
        parse_baselines(["num_steps=1"], g, samplers)
