"""The one exception type a user sees: its message names the problem and what to pass instead."""


class SelfsupError(Exception):
    """A user-facing error. The CLI prints its message as one line, without a traceback."""
