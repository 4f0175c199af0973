"""The one error type that means "the user's input is wrong" (the CLI exits 2 on it)."""


class InputError(ValueError):
    """Bad input: the message names what is wrong and what to do about it."""
