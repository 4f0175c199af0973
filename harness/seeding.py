"""Noise and labels for sample i come from (seed, i) alone: re-exported from the contract
(`adapters.api.seeding`), where it now lives."""

from adapters.api.seeding import sample_labels, sample_noise

__all__ = ["sample_labels", "sample_noise"]
