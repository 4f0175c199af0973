"""The printed summary: timings with intervals and warnings, speed-up rows next to the paper's,
and the compute and latency floors."""

import pytest
from rich.console import Console

from adapters.api.sampler import ModelInfo
from harness import results
from harness.timing.summary import (
    PAPER_SPEEDUP,
    floors,
    floors_caption,
    floors_table,
    speedup_rows,
    speedup_table,
    timing_table,
    warning,
)

PEAK = 200e9  # FLOP/s of the fake run's matmul


def row(model, bs, decode, ms_per_image, compiled=False, status=results.OK, stable=True, n=5, cv=0.01):
    base = dict(model=model, batch_size=bs, decode=decode, compiled=compiled, status=status, n=n, stable=stable,
                config={"cv": cv})
    if status != results.OK:
        return [dict(base, metric=results.MS_PER_BATCH, value=None, notes="CUDA out of memory")]
    lo, hi = 0.98 * ms_per_image, 1.03 * ms_per_image
    return [dict(base, metric=results.MS_PER_BATCH, value=ms_per_image * bs, ci_low=lo * bs, ci_high=hi * bs),
            dict(base, metric=results.MS_PER_IMAGE, value=ms_per_image, ci_low=lo, ci_high=hi),
            dict(base, metric=results.IMAGES_PER_S, value=1e3 / ms_per_image),
            dict(base, metric=results.FRAC_MATMUL_PEAK, value=0.8,
                 config={"matmul_peak_flops": PEAK, "flops_per_batch": 1.0})]


def speedup(bs, decode, value, low, high, stable=True, teacher="itarflow-b2", n=5, **config):
    return dict(model="biflow-b2", batch_size=bs, decode=decode, compiled=False, metric=results.SPEEDUP, value=value,
                ci_low=low, ci_high=high, stable=stable, n=n, status=results.OK,
                config={"teacher": teacher, "fast_ms_per_image": 330.0, "teacher_ms_per_image": value * 330.0,
                        "cv": 0.02, **config})


CALIBRATION = dict(model="calibration", metric=results.CALIBRATION_MS, value=56.6, ci_low=56.0, ci_high=57.5,
                   stable=True, n=5, config={"workload": "float32 matmul 512x512 x40", "peak_flop_per_s": PEAK,
                                             "when": "start"})
ROWS = [
    CALIBRATION, dict(CALIBRATION, value=57.0, ci_low=56.3, ci_high=57.9, config={**CALIBRATION["config"], "when": "end"}),
    *row("biflow-b2", 1, "off", 330.0), *row("itarflow-b2", 1, "off", 9900.0),
    *row("biflow-b2", 4, "off", 320.0), *row("itarflow-b2", 4, "off", 3300.0, stable=False, n=5, cv=0.41),
    *row("biflow-b2", 1, "on", 3930.0), *row("itarflow-b2", 1, "on", 13500.0),
    *row("rf-b2", 8, "off", 0.0, status=results.OOM),
    *row("sd-vae", 1, "only", 3600.0),
    speedup(1, "off", 30.0, 29.1, 31.0), speedup(4, "off", 10.3, 9.0, 11.9, stable=False),
    speedup(1, "on", 3.44, 3.40, 3.49),
    speedup("", "off", 10.3, 9.5, 11.1, at="best throughput", batch_size=4, teacher_batch_size=4),
]

INFOS = {
    "biflow-b2": ModelInfo(name="biflow-b2", family="biflow", params=1, nfe=1, sequential_steps=1, space="latent",
                           sample_shape=(4, 32, 32), image_size=256, num_classes=1000, gflops=50.0, weights="r"),
    "itarflow-b2": ModelInfo(name="itarflow-b2", family="tarflow", params=1, nfe=2, sequential_steps=2000,
                             space="latent", sample_shape=(4, 32, 32), image_size=256, num_classes=1000, gflops=60.0,
                             weights="r"),
}


def render(table):
    console = Console(record=True, width=220)
    console.print(table)
    return console.export_text()


def line_of(text, *words):
    return next(line for line in text.splitlines() if all(w in line for w in words))


def test_timing_table_shows_intervals_and_warns_beside_unstable_numbers():
    text = render(timing_table(ROWS))
    assert "oom: CUDA out of memory" in text and "sd-vae" in text
    assert "calibration (float32 matmul 512x512 x40): start 56.6 ms, end 57.0 ms; fastest call 200 GFLOP/s" in text
    assert "unsure" not in text and "changed" not in text
    stable_line = line_of(text, "biflow-b2", " 4 ", "off")
    assert "314-330" in stable_line and "80%" in stable_line and "unstable" not in stable_line
    assert "unstable: CV 41%, n 5" in line_of(text, "itarflow-b2", " 4 ", "off")


def test_warning_reads_like_pyperf():
    assert warning({"stable": "False", "n": 2, "config": '{"cv": 0.41}'}) == "unstable: CV 41%, n 2"
    assert warning({"stable": False, "n": 1, "config": {}}) == "unstable: n 1"
    assert warning({"stable": "True", "n": 9}) == "" and warning({"stable": True}) == ""


def test_speedup_table_shows_measured_ratios_with_intervals_next_to_the_paper():
    text = render(speedup_table(ROWS))
    assert "30.0x" in text and "29.1-31.0" in text and "224x" in text
    assert "3.4x" in text and "42x" in text and "best 4/4" in text
    assert "unstable" in line_of(text, "10.3x", "9.0-11.9")
    assert [r["batch_size"] for r in speedup_rows(ROWS)] == [1, 4, 1, ""]  # per batch size, then best throughput
    assert PAPER_SPEEDUP == {"off": 224.0, "on": 42.0}
    assert "not measured" in render(speedup_table(ROWS[:3]))
    # another pair gets no paper column
    other = render(speedup_table([speedup(1, "off", 5.0, 4.0, 6.0, teacher="sit-b2")]))
    assert "5.0x" in other and "224x" not in other


def test_floors_say_which_bound_binds():
    found = {(f["model"], f["batch_size"]): f for f in floors(ROWS, INFOS)}
    it1, it4, bi1 = found[("itarflow-b2", 1)], found[("itarflow-b2", 4)], found[("biflow-b2", 1)]
    assert it1["compute_ms"] == pytest.approx(2 * 60e9 / PEAK * 1e3)  # nfe 2 x 60 GFLOP at 200 GFLOP/s: 600 ms
    assert it1["step_ms"] == pytest.approx(min(9900.0, 4 * 3300.0) / 2000)  # shortest ms per batch over its steps
    assert it1["latency_ms"] == pytest.approx(9900.0) and it4["latency_ms"] == pytest.approx(9900.0 / 4)
    assert it1["bound"] == it4["bound"] == "latency"
    assert bi1["compute_ms"] == pytest.approx(250.0) and found[("biflow-b2", 4)]["bound"] == "compute"
    caption = floors_caption(ROWS, INFOS)
    assert "matmul peak 200 GFLOP/s" in caption
    assert "itarflow-b2's 2000 dependent steps x 4.95 ms = 9.90 s per batch" in caption
    assert "a larger batch lowers the speed-up" in caption
    assert "ratio of the compute floors, 2.4x" in caption  # (2 x 60) / 50
    text = render(floors_table(ROWS, INFOS))
    assert "latency" in line_of(text, "itarflow-b2", " 4 ") and "compute" in line_of(text, "biflow-b2", " 4 ")


def test_a_one_step_model_has_no_latency_floor_and_is_bound_by_compute():
    # biflow-b2 takes one sequential step: its "shortest step" is its own shortest call, so a latency
    # floor of 1 x that step would equal its measured time at batch 1 and always bind. It has none.
    slow = [*row("biflow-b2", 1, "off", 900.0), *row("biflow-b2", 4, "off", 400.0)]  # slower than compute (250)
    found = {f["batch_size"]: f for f in floors([CALIBRATION, *slow], INFOS)}
    for bs, f in found.items():
        assert f["latency_ms"] is None and f["bound"] == "compute", bs
    # the fraction of the peak it reaches: compute floor / measured, 250 / 900 and 250 / 400
    assert found[1]["of_peak"] == pytest.approx(250.0 / 900.0) and found[4]["of_peak"] == pytest.approx(250 / 400)
    text = render(floors_table([CALIBRATION, *slow], INFOS))
    line = line_of(text, "biflow-b2", " 1 ")
    assert "compute" in line and "latency" not in line and " 28% " in line and " 900 " in line
    assert " 62% " in line_of(text, "biflow-b2", " 4 ")
    # a many-step model keeps its latency floor and its fraction of the peak: 600 / 9900 at batch 1
    it1 = next(f for f in floors(ROWS, INFOS) if (f["model"], f["batch_size"]) == ("itarflow-b2", 1))
    assert it1["latency_ms"] == pytest.approx(9900.0) and it1["of_peak"] == pytest.approx(600.0 / 9900.0)
    # without a calibration no floor is known for a one-step model: nothing is said to bind
    bare = [r for r in slow if r["metric"] != results.FRAC_MATMUL_PEAK]
    assert {f["bound"] for f in floors(bare, INFOS)} == {None}
    assert " - " in line_of(render(floors_table(bare, INFOS)), "biflow-b2", " 1 ")


def test_without_calibration_the_compute_floor_is_unknown():
    rows = [r for r in ROWS if r["metric"] not in (results.CALIBRATION_MS, results.FRAC_MATMUL_PEAK)]
    assert all(f["compute_ms"] is None for f in floors(rows, INFOS))
    assert "--no-calibration" in floors_caption(rows, INFOS)


def test_an_unstable_or_changing_calibration_is_said_under_the_timings():
    rows = [dict(ROWS[0], stable=False, n=5, config={**ROWS[0]["config"], "cv": 0.46})] + ROWS[1:]
    text = " ".join(render(timing_table(rows)).split())  # the caption wraps
    assert "unstable: CV 46%, n 5: the calibration ratio and every fraction of the peak are unsure" in text
    burst = [dict(ROWS[0], value=1330.0, ci_low=480.0, ci_high=1470.0)] + ROWS[1:]
    assert "the machine's speed changed during the run" in " ".join(render(timing_table(burst)).split())
