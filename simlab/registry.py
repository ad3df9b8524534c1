"""Registries: one place where each kind of extension is known by its name.

A learning rule, a rig type, an architecture type, a task type, an analysis and a classifier
are each registered once, by the module that implements them (simlab's own and a user's
alike), and everything else finds them here: the protocol schema validates names against a
registry, the CLI lists its entries, the trainer, the rigs and ``simlab run`` look the
implementation up. This module sits at the bottom of the package: it knows no kind of
extension, only names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from simlab.errors import SimlabError

T = TypeVar("T")

__all__ = ["ANALYSES", "ARCHITECTURES", "CLASSIFIERS", "RIGS", "RULES", "TASKS", "Registry", "unknown_name_message"]


def unknown_name_message(kind: str, name: object, known: Iterable[str]) -> str:
    """One wording for every unknown name, with the known ones and a likely typo fix."""
    known = sorted(known)
    message = f"unknown {kind} {name!r} (known: {', '.join(known) or 'none'})"
    close = difflib.get_close_matches(str(name), known, n=1)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind by name, in order of registration (a read-only mapping).

    ``register(name, entry)`` adds one; registering a name twice is refused unless
    ``replace=True`` (a second module claiming a name is a mistake, not an override).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        if not isinstance(name, str) or not name.isidentifier():
            raise SimlabError(f"{self.kind} names are Python identifiers (letters, digits, '_'), got {name!r}")
        if name in self._entries and not replace:
            raise SimlabError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove an entry (a test that registered one cleans up after itself)."""
        return self._entries.pop(name)

    def get_entry(self, name: str) -> T:
        """The entry called ``name``, or a :class:`SimlabError` listing the known names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise SimlabError(unknown_name_message(self.kind, name, self._entries)) from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


RULES: Registry = Registry("learning rule")
RIGS: Registry = Registry("rig type")
ARCHITECTURES: Registry = Registry("architecture type")
TASKS: Registry = Registry("task type")
ANALYSES: Registry = Registry("analysis")
CLASSIFIERS: Registry = Registry("classifier")
