"""Errors that are the user's to fix.

The CLI prints a :class:`SimlabError` as one line (or one block, for a list of protocol
problems) and exits non-zero, without a traceback. Anything else is a bug in simlab and keeps
its traceback.
"""


class SimlabError(Exception):
    """A mistake in the user's input: a missing file, a bad value, an existing output."""
