"""Errors that are the user's to fix.

The CLI prints a :class:`SimlabError` as one line (or one block, for a list of protocol
problems) and exits non-zero, without a traceback. Anything else is a bug in simlab and keeps
its traceback.

A message names the parameters of the function the user called with :func:`parameter`, so the
same error reads ``force=True`` from Python and ``--force`` on the command line: the library
never speaks of flags, the CLI maps parameters to its flags (:meth:`SimlabError.message`).
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

_OPEN, _SEP, _CLOSE = "\ue000", "\ue001", "\ue002"  # private-use characters: never in user text
_MARK = re.compile(f"{_OPEN}([^{_SEP}{_CLOSE}]*)(?:{_SEP}([^{_CLOSE}]*))?{_CLOSE}")
_NO_VALUE = object()


def parameter(name: str, value: object = _NO_VALUE) -> str:
    """A parameter as an error message names it: ``name`` or ``name=value`` from Python, the
    command's flag (``--name`` or ``--name value``) on the command line."""
    return f"{_OPEN}{name}{_CLOSE}" if value is _NO_VALUE else f"{_OPEN}{name}{_SEP}{value!r}{_CLOSE}"


def python_spelling(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={value}"


def spell_parameters(text: str, spell: Callable[[str, str | None], str] = python_spelling) -> str:
    """``text`` with every :func:`parameter` mark spelled by ``spell(name, value_repr)``."""
    return _MARK.sub(lambda m: spell(m[1], m[2]), text)


class SimlabError(Exception):
    """A mistake in the user's input: a missing file, a bad value, an existing output."""

    def __str__(self) -> str:
        return self.message()

    def message(self, flags: Mapping[str, str] | None = None) -> str:
        """The message, with parameters spelled as Python keywords, or as the command-line
        ``flags`` (parameter name -> flag) where one is given."""
        text = super().__str__()
        if not flags:
            return spell_parameters(text)

        def spell(name: str, value: str | None) -> str:
            if name not in flags:
                return python_spelling(name, value)
            if value is None or value == "True":
                return flags[name]
            return f"{flags[name]} {value}"

        return spell_parameters(text, spell)
