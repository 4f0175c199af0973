"""Adapters turn each generator family into a `harness.sampler.Sampler`.

Public API: `list_models`, `load_sampler`, `model_info`, `register` (for outside families,
which can also be found through the ``nfebench.adapters`` entry-point group).
"""

from adapters.registry import ENTRY_POINT_GROUP, ModelSpec, get_spec, list_models, load_sampler, model_info, register

__all__ = ["ENTRY_POINT_GROUP", "ModelSpec", "get_spec", "list_models", "load_sampler", "model_info", "register"]
