"""The quality gate (`harness.quality`), alone and inside the sweep, on tarflow-mini.

"Trained" weights here are tarflow-mini's random-init weights perturbed everywhere (its
zero-initialised output heads included) and saved as a checkpoint: the gate cannot tell them
from trained ones (rows name their sha256), and Jacobi decoding needs several passes on them
(6 per block here) where random-init weights need 2.
"""

import json

import numpy as np
import pytest
import torch

from adapters import load_sampler
from harness import results
from harness.datasets import load_digits_split, to_uint8_nhwc
from adapters.api.errors import InputError
from harness.quality import DEFAULT_TOL, Bound, GateConfig, deviation, is_exact, judge, reference_options
from harness.results import FAILED, FID, REFERENCE, UNVERIFIED, VERIFIED, read_run
from harness.timing.sweep import SweepConfig, run_sweep

FAST = dict(models=("tarflow-mini",), device="cpu", warmup=0, repeats=5, max_time=0.2, calibrate=False)
JACOBI = {"decoding": "jacobi", "jacobi_tol": 1e-3}
GS = {"decoding": "gs-jacobi", "gs_segments": (1, 1, 4, 1), "jacobi_tol": 1e-3}
GATE = (results.MAX_ABS_DEVIATION, results.MEAN_ABS_DEVIATION)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    sampler = load_sampler("tarflow-mini")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sampler.net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    path = tmp_path_factory.mktemp("ckpt") / "tarflow-mini.pt"
    torch.save(sampler.net.state_dict(), path)
    return path


def sweep(tmp_path, name="run", **fields):
    out = tmp_path / f"{name}.csv"
    res = run_sweep(SweepConfig(**{**FAST, **fields}), out, None, progress=False)
    assert res.errors == []
    df = read_run(out)
    df["opts"] = [json.dumps(json.loads(c).get("options", {}), sort_keys=True) if c else "" for c in df.config]
    return df


def key(options):
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}, sort_keys=True)


def of(df, metric, options=None, **where):
    sel = df[df.metric == metric]
    if options is not None:
        sel = sel[sel.opts == key(options)]
    for col, value in where.items():
        sel = sel[sel[col].astype(str) == str(value)]
    return sel


# --- the parts ----------------------------------------------------------------------------

def test_judge_fid_decides_when_both_are_measured_else_the_deviation():
    assert judge(mean_dev=0.5, tol=0.01, fid=10.1, fid_ref=10.0, fid_rtol=0.02)[0] == VERIFIED  # FID within 2%
    quality, why = judge(mean_dev=0.0, tol=0.01, fid=10.3, fid_ref=10.0, fid_rtol=0.02)
    assert quality == FAILED and "beyond 2%" in why
    assert judge(mean_dev=0.005, tol=0.01)[0] == VERIFIED and judge(mean_dev=0.02, tol=0.01)[0] == FAILED
    assert DEFAULT_TOL == pytest.approx(1 / 127.5)  # one uint8 level of [-1, 1]


def test_deviation_is_over_every_entry_in_float64():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1, 2, 3, 3] = 0.5
    assert deviation(b, a) == (0.5, pytest.approx(0.5 / a.numel()))
    assert deviation(np.asarray(b), a) == deviation(b, a)  # a JAX or numpy output converts


def test_reference_options_are_the_family_exact_decoding():
    tarflow = load_sampler("tarflow-mini", device="meta")
    assert reference_options(tarflow, {**GS, "denoise": False}) == {"decoding": "sequential", "denoise": False}
    assert reference_options(tarflow, GS) == {} == reference_options(tarflow, {"decoding": "sequential"})
    assert is_exact(tarflow, {"decoding": "sequential", "denoise": False}) and not is_exact(tarflow, GS)
    rf = load_sampler("rf-mini", device="meta")  # no exact_options: only dtype and compilation can differ
    assert reference_options(rf, {"steps": 4}) == {"steps": 4}


@pytest.mark.parametrize("config, message", [
    (GateConfig(tol=-1.0), "--quality-tol"), (GateConfig(samples=0), "--quality-samples"),
    (GateConfig(n=10), "go together"), (GateConfig(reference="ref.npz"), "go together"),
    (GateConfig(reference="no-such-file.npz", n=1), "at least 2"),
])
def test_bad_gate_settings_are_input_errors(config, message):
    with pytest.raises(InputError, match=message):
        config.check()


def test_bound_sampler_passes_its_options():
    s = load_sampler("tarflow-mini")
    noise = torch.randn(2, 3, 8, 8)
    bound = Bound(s, JACOBI)
    bound.generate(noise, torch.tensor([1, 2]))
    assert s.last_stats["iterations_per_block"] == [2, 2, 2, 2]  # Jacobi ran (random weights: 2 passes)
    assert bound.info is s.info and bound.decoder_weights is None


# --- inside the sweep -------------------------------------------------------------------

def test_iterations_are_recorded_and_random_weight_jacobi_is_not_representative(tmp_path):
    df = sweep(tmp_path, batch_sizes=(2,), options={"tarflow-mini": ({}, JACOBI, GS)})
    seq, jac, gs = (of(df, results.MS_PER_IMAGE, o).iloc[0] for o in ({}, JACOBI, GS))
    for row in (seq, jac, gs):
        assert row.weights == "random-init" and int(row.nfe) == 2
    c = [json.loads(r.config) for r in (seq, jac, gs)]
    assert c[0]["iterations_per_block"] == [15] * 4 and c[0]["iterations_mean"] == 15 and c[0]["iterations_max"] == 15
    assert c[1]["iterations_per_block"] == [2] * 4 and c[1]["iterations_mean"] == 2.0  # random weights: 2 passes
    assert len(c[2]["iterations_per_block"]) == 4 and c[2]["options"]["gs_segments"] == [1, 1, 4, 1]
    # the reference setting is exact; the parallel ones on random weights are flagged and unverified
    assert seq.quality == REFERENCE and "not representative" not in str(seq.notes)
    for row in (jac, gs):
        assert row.quality == UNVERIFIED and "not representative" in row.notes
    gate = df[df.metric.isin(GATE)]
    assert set(gate.opts) == {key(JACOBI), key(GS)} and set(gate.quality) == {UNVERIFIED}  # deviations recorded


def test_tolerance_zero_equals_sequential_and_names_the_checkpoint(tmp_path, weights):
    from adapters.api.checkpoint import file_sha256

    zero = ({"decoding": "jacobi", "jacobi_tol": 0.0}, {"decoding": "gs-jacobi", "gs_segments": 3, "jacobi_tol": 0.0})
    df = sweep(tmp_path, batch_sizes=(1,), checkpoints={"tarflow-mini": str(weights)}, options={"tarflow-mini": zero})
    assert set(df.weights) == {file_sha256(weights)}  # "sha256:<hex>"
    for options in zero:
        dev = of(df, results.MAX_ABS_DEVIATION, options).iloc[0]
        assert dev.value <= 1e-5 and dev.quality == VERIFIED and int(dev.batch_size) == 8  # float32 rounding only
        assert json.loads(dev.config)["reference_setting"] == {"compiled": False, "dtype": "float32",
                                                               "options": {}}  # sequential: the defaults
        timing = of(df, results.MS_PER_IMAGE, options).iloc[0]
        assert timing.quality == VERIFIED and "not representative" not in str(timing.notes)
        assert json.loads(timing.config)["iterations_per_block"] == [15] * 4  # tolerance 0 runs to the cap


def test_bf16_quality_rows_against_float32_and_a_failed_gate_below_the_deviation(tmp_path, weights):
    ckpt = {"tarflow-mini": str(weights)}
    df = sweep(tmp_path, batch_sizes=(1,), dtype="bfloat16", checkpoints=ckpt)
    mean = of(df, results.MEAN_ABS_DEVIATION).iloc[0]
    biggest = of(df, results.MAX_ABS_DEVIATION).iloc[0]
    assert mean["dtype"] == "bfloat16" and 0 < mean.value <= biggest.value and int(mean.n) == 8
    assert json.loads(mean.config)["reference_setting"]["dtype"] == "float32"
    assert json.loads(mean.config)["space"] == "pixel"
    expected = VERIFIED if mean.value <= DEFAULT_TOL else FAILED  # default tolerance, no FIDs: the deviation decides
    assert mean.quality == expected and of(df, results.MS_PER_IMAGE).iloc[0].quality == expected
    # the same setting with a tolerance below the deviation it measured: failed, on every row
    strict = sweep(tmp_path, "strict", batch_sizes=(1,), dtype="bfloat16", checkpoints=ckpt,
                   quality_tol=mean.value / 2)
    assert of(strict, results.MEAN_ABS_DEVIATION).iloc[0].value == pytest.approx(mean.value)  # deterministic
    timed = strict[strict.metric == results.MS_PER_IMAGE].iloc[0]
    assert timed.quality == FAILED and "> tolerance" in json.loads(timed.config)["quality_check"]
    assert set(strict[strict.metric.isin(GATE + (results.MS_PER_BATCH,))].quality) == {FAILED}


def test_no_quality_leaves_fast_settings_unverified(tmp_path, weights):
    df = sweep(tmp_path, batch_sizes=(1,), dtype="bfloat16", checkpoints={"tarflow-mini": str(weights)},
               quality=False)
    assert df[df.metric.isin(GATE)].empty
    row = of(df, results.MS_PER_IMAGE).iloc[0]
    assert row.quality == UNVERIFIED and "no quality check" in json.loads(row.config)["quality_check"]


@pytest.fixture(scope="module")
def digits_stats(tmp_path_factory):
    """Statistics of 24 held-out digits (few: each Inception pass costs ~0.1 s per image here)."""
    from harness.cli import main
    from harness.results import atomic_write_npz

    folder = tmp_path_factory.mktemp("digits")
    split = load_digits_split()
    atomic_write_npz(folder / "digits.npz", arr_0=to_uint8_nhwc(split.ref_x[:24]))
    assert main(["ref-stats", str(folder / "digits.npz"), "-o", str(folder / "stats.npz")]) == 0
    return folder / "stats.npz"


def test_fid_rows_per_setting_and_the_verdict_follows_them(tmp_path, weights, digits_stats):
    ckpt = {"tarflow-mini": str(weights)}
    df = sweep(tmp_path, batch_sizes=(1,), checkpoints=ckpt, options={"tarflow-mini": ({"decoding": "sequential"},
                                                                                       {**JACOBI, "jacobi_tol": 0.1})},
               quality_ref=str(digits_stats), quality_n=6)
    fids = df[df.metric == FID]
    assert len(fids) == 2 and set(fids.n.astype(int)) == {6} and fids.ci_low.notna().all()
    ref = of(df, FID, {}).iloc[0]  # decoding=sequential is the default setting
    jac = of(df, FID, {**JACOBI, "jacobi_tol": 0.1}).iloc[0]
    assert ref.quality == REFERENCE and ref.weights == jac.weights and ref.decode == "on"
    assert json.loads(jac.config)["reference"] == str(digits_stats) and json.loads(jac.config)["mode"] == "adm"
    expected, why = judge(mean_dev=0.0, tol=0.0, fid=jac.value, fid_ref=ref.value, fid_rtol=0.02)
    timed = of(df, results.MS_PER_IMAGE, {**JACOBI, "jacobi_tol": 0.1}).iloc[0]
    assert jac.quality == timed.quality == expected and json.loads(timed.config)["quality_check"] == why
    # the FID is the one `nfebench eval` measures for the same samples
    from harness.cli import main

    argv = ["eval", "--model", "tarflow-mini", "--checkpoint", str(weights), "--num-samples", "6", "--seed", "0",
            "--ref", str(digits_stats), "--batch-size", "6", "--metrics", "fid", "--out", str(tmp_path / "eval.csv")]
    assert main(argv) == 0
    assert read_run(tmp_path / "eval.csv").value.iloc[0] == pytest.approx(ref.value, rel=1e-6)
    # random weights: no FID is measured (it would say nothing), the deviations still are
    rnd = sweep(tmp_path, "random", batch_sizes=(1,), options={"tarflow-mini": (JACOBI,)},
                quality_ref=str(digits_stats), quality_n=6)
    assert rnd[rnd.metric == FID].empty and len(rnd[rnd.metric.isin(GATE)]) == 2
