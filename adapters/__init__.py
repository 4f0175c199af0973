"""Adapters turn each generator family into an `adapters.api.Sampler`.

`adapters.api` is the contract every family is written against (and the only part of
`adapters` the harness imports); each ``adapters/<family>/`` package registers its ids and is
found through the ``nfebench.adapters`` entry-point group, as a third party's family is.

Public API: `list_models`, `load_sampler`, `model_info`, `get_spec`, `register`, `register_sizes`.
"""

from adapters.api.registry import (ENTRY_POINT_GROUP, ModelSpec, Size, get_spec, list_models, load_sampler,
                                   model_info, register, register_sizes)

__all__ = ["ENTRY_POINT_GROUP", "ModelSpec", "Size", "get_spec", "list_models", "load_sampler", "model_info",
           "register", "register_sizes"]
