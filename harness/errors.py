"""`InputError`, re-exported from the contract (`adapters.api.errors`), where it now lives."""

from adapters.api.errors import InputError

__all__ = ["InputError"]
