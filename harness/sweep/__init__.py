"""Quality at every setting: a grid of settings per model, each measured for quality and for
time in one run (``nfebench sweep``, issue 21; `harness.commands.sweep` lists its rows, and the
leaderboard's frontier reads them).

The parts, in the order they import one another:

- `grid`: ``--grid`` axes and ``--options`` settings expanded into each model's settings
  (`GridSetting`), with the checks of bad axes, values and duplicates;
- `workdir`: the sweep on disk, one entry per setting (`SweepDir`, `SettingEntry`);
- `quality`: a setting's quality pass through `harness.evaluate.evaluate_sampler` (the path of
  ``nfebench eval``), timed (`MeasuredSampler`), and its rows;
- `timing`: each model's settings through the timer of ``nfebench bench``, in alternating
  rounds against its baseline (`SettingTimer`);
- `driver`: the request (`SweepRequest`), its checks (`plan_sweep`) and the run (`run_sweep`).

Example::

    from harness.sweep import SweepRequest, run_sweep
    result = run_sweep(SweepRequest(models=("rf-mini",), grid=("num_steps=1,2,4,8",), num_samples=200,
                                    reference="digits-heldout-stats.npz", seed=0, work_dir="runs/rf"))
"""

from harness.sweep.driver import (
           SweepPlan,
           SweepRequest,
           SweepResult,
           plan_sweep,
           run_planned,
           run_sweep,
)
from harness.sweep.grid import (
           Axis,
           GridSetting,
           expand_grid,
           parse_axis,
           parse_baselines,
)

__all__ = ["Axis", "GridSetting", "SweepPlan", "SweepRequest", "SweepResult", "expand_grid", "parse_axis",
           "parse_baselines", "plan_sweep", "run_planned", "run_sweep"]
