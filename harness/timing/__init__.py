"""Timing: the benchmark sweep (`sweep.run_sweep`) and its parts: what a run measures (`config`),
the points planned (`plan`), the backend-neutral runner (`runner`) with its rows (`rows`) and the
torch and JAX runners beside it (`torch_runner`, `jax_runner`); clocks (`clocks`), adaptive
repeats (`adaptive`), statistics (`stats`), peak memory (`memory`), device peaks and MFU
(`peaks`) and the printed summary (`summary`)."""
