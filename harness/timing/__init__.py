"""Timing: clocks per backend (`clocks`), peak memory (`memory`), device peaks and MFU
(`peaks`), the benchmark sweep (`sweep`) and its printed summary (`summary`)."""
