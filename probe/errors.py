"""The one exception type the toolkit raises for bad input.

Every check that guards user input raises :class:`ProbeError` with a one-line message naming the bad value and what
was expected; the command line prints that line instead of a traceback.
"""


class ProbeError(ValueError):
    """Bad input or an unusable run directory, described in one line."""
