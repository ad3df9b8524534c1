"""Registries: one place where each kind of extension is known by its name.

A learning rule, a rig type, an architecture type, a task type, an analysis and a classifier
are each registered once, by the module that implements them (simlab's own and a user's
alike), and everything else finds them here: the protocol schema validates names against a
registry, the CLI lists its entries, the trainer, the rigs and ``simlab run`` look the
implementation up. This module sits at the bottom of the package: it knows no kind of
extension, only names, and, like entry points, the names of the modules whose import
registers simlab's own entries: a registry imports them when it is first read, so a command
that never looks a rule up (``simlab --help``, ``simlab info FILE``) never imports JAX.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from simlab.errors import SimlabError

T = TypeVar("T")

__all__ = ["ANALYSES", "ARCHITECTURES", "CLASSIFIERS", "RIGS", "RULES", "Registry", "unknown_name_message"]


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

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._builtins = builtins  # modules whose import registers simlab's own entries
        self._loaded = not builtins

    def _load_builtins(self) -> None:
        """Import the built-in modules once, before the first read or registration (so that a
        user's entry can never silently take a built-in's name)."""
        if not self._loaded:
            self._loaded = True  # first: the modules register into this registry as they load
            for module in self._builtins:
                importlib.import_module(module)

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        self._load_builtins()
        if not isinstance(name, str) or not name.isidentifier():
            raise SimlabError(f"{self.kind} names are Python identifiers (letters, digits, '_'), got {name!r}")
        if name in self._entries and not replace:
            raise SimlabError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove an entry (a test that registered one cleans up after itself)."""
        self._load_builtins()
        return self._entries.pop(name)

    def get_entry(self, name: str) -> T:
        """The entry called ``name``, or a :class:`SimlabError` listing the known names."""
        self._load_builtins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise SimlabError(unknown_name_message(self.kind, name, self._entries)) from None

    def __getitem__(self, name: str) -> T:
        self._load_builtins()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:  # never loads the built-ins: pydantic shows validators while building schemas
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


# each with the modules that register simlab's own entries, in the order they are listed
RULES: Registry = Registry("learning rule", ("simlab.rules",))
RIGS: Registry = Registry("rig type", ("simlab.recording.rigs",))
ARCHITECTURES: Registry = Registry("architecture type", ("simlab.subjects.architectures",))
ANALYSES: Registry = Registry("analysis", ("simlab.analysis",))
CLASSIFIERS: Registry = Registry("classifier", ("simlab.analysis.classifiers",))
