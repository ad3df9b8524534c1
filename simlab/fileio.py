"""Atomic file writes: a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from simlab.errors import SimlabError, parameter


def refuse_overwrite(path: Path, force: bool) -> None:
    """Existing results are never overwritten unless the user asks (``force``)."""
    if Path(path).exists() and not force:
        raise SimlabError(f"{path} already exists; pass {parameter('force', True)} to overwrite it")


@contextlib.contextmanager
def atomic_path(path: Path, force: bool = False):
    """Yield a temporary path next to ``path``; rename it into place when the block succeeds."""
    path = Path(path)
    refuse_overwrite(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; results are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: Path, text: str, force: bool = False) -> None:
    with atomic_path(path, force) as tmp:
        tmp.write_text(text)
