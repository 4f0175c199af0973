"""The printed summary: BiFlow's speed-up over iTARFlow from rows, next to the paper's."""

import pytest
from rich.console import Console

from harness import results
from harness.timing.summary import PAPER_SPEEDUP, speedup_table, speedups, timing_table


def row(model, bs, decode, ms_per_image, compiled=False, status=results.OK):
    base = dict(model=model, batch_size=bs, decode=decode, compiled=compiled, status=status, n=3)
    if status != results.OK:
        return [dict(base, metric=results.MS_PER_BATCH, value=None, notes="CUDA out of memory")]
    return [dict(base, metric=results.MS_PER_BATCH, value=ms_per_image * bs, spread=0.5),
            dict(base, metric=results.MS_PER_IMAGE, value=ms_per_image, spread=0.1),
            dict(base, metric=results.IMAGES_PER_S, value=1e3 / ms_per_image)]


ROWS = [
    dict(model="calibration", metric=results.CALIBRATION_MS, value=250.0, config={"workload": "matmul"}),
    *row("biflow-b2", 1, "off", 2.0), *row("itarflow-b2", 1, "off", 500.0),
    *row("biflow-b2", 1, "on", 10.0), *row("itarflow-b2", 1, "on", 508.0),
    *row("biflow-b2", 4, "off", 1.0), *row("itarflow-b2", 4, "off", 0.0, status=results.OOM),
    *row("biflow-b2", 1, "off", 1.0, compiled=True),
    *row("sd-vae", 1, "only", 8.0),
]


def test_speedups_pair_the_same_settings_only():
    found = {(s["compiled"], s["batch_size"], s["decode"]): s for s in speedups(ROWS)}
    assert set(found) == {(False, 1, "off"), (False, 1, "on")}  # OOM and unpaired points have none
    assert found[(False, 1, "off")]["speedup"] == pytest.approx(250.0)
    assert found[(False, 1, "on")]["speedup"] == pytest.approx(50.8)
    assert found[(False, 1, "on")]["paper"] == PAPER_SPEEDUP["on"] == 42.0
    assert PAPER_SPEEDUP["off"] == 224.0


def render(table):
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()


def test_tables_show_measured_and_paper_figures():
    text = render(speedup_table(ROWS))
    assert "250.0x" in text and "224x" in text and "50.8x" in text and "42x" in text
    text = render(timing_table(ROWS))
    assert "oom: CUDA out of memory" in text and "calibration (matmul): 250.0 ms" in text and "sd-vae" in text
    assert "not measured" in render(speedup_table(ROWS[:3]))
