"""Feature transforms: what of a site's session trajectory a classifier sees.

A transform maps each site's trajectory of each observable over sessions (one row of
``(site, session, observable)``) to a new sequence, using that trajectory alone: never another
site, another observable or test data, so it cannot leak across a split and needs no fitting.
The scale of a statistic differs between architectures and tasks far more than its course
over training does, which is why the scale-free transforms can transfer where ``raw`` does
not (measure it with ``simlab generalize --transform ...``).

- ``raw``: the values at every session (S columns).
- ``diff``: session-to-session differences ``x[t] - x[t-1]``, t = 1..S-1 (S-1 columns).
- ``diff_scaled``: ``diff`` divided by the trajectory's total variation ``sum_t |diff[t]|``,
  so the steps sum to 1 in absolute value; a constant trajectory (total variation 0) gives 0.
- ``log_ratio``: ``log((|x[t]| + eps) / (|x[0]| + eps))``, t = 1..S-1: the change of magnitude
  relative to the first session (the sign of the value is dropped; raw and diff keep it).
  ``eps = 1e-6 * max_t |x[t]| + 1e-30``: relative to the trajectory's own scale, so it only
  matters where a value is near 0, and an all-zero trajectory gives 0.
- ``ranks``: the rank of each session's value among the trajectory's sessions, 1..S (ties:
  average rank), i.e. only the order of the values.

A list of transforms concatenates their columns (transform-major). Where their lengths
differ, the shorter ones are padded at the front with 0 so that every channel has one column
per session (a Conv1D classifier reads them as aligned channels): a padded ``diff`` is 0 at
the first session, which is the difference to itself.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import rankdata

from simlab.errors import SimlabError
from simlab.specs.analyses import TRANSFORMS

__all__ = ["TRANSFORMS", "apply_transform", "channel_name", "transform_names", "transformed"]

LOG_RATIO_RELATIVE_EPS = 1e-6
LOG_RATIO_ABSOLUTE_EPS = 1e-30


def _raw(x: np.ndarray) -> np.ndarray:
    return x


def _diff(x: np.ndarray) -> np.ndarray:
    return np.diff(x, axis=1)


def _diff_scaled(x: np.ndarray) -> np.ndarray:
    steps = np.diff(x, axis=1)
    total = np.abs(steps).sum(axis=1, keepdims=True)
    return np.divide(steps, total, out=np.zeros_like(steps), where=total > 0)


def _log_ratio(x: np.ndarray) -> np.ndarray:
    magnitude = np.abs(x)
    eps = LOG_RATIO_RELATIVE_EPS * magnitude.max(axis=1, keepdims=True) + LOG_RATIO_ABSOLUTE_EPS
    return np.log(magnitude[:, 1:] + eps) - np.log(magnitude[:, :1] + eps)


def _ranks(x: np.ndarray) -> np.ndarray:
    return rankdata(x, axis=1, method="average")


_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "raw": _raw,
    "diff": _diff,
    "diff_scaled": _diff_scaled,
    "log_ratio": _log_ratio,
    "ranks": _ranks,
}
assert set(_FUNCTIONS) == set(TRANSFORMS)


def transform_names(transform) -> tuple[str, ...]:
    """The transforms of a setting (one name or a list), in order."""
    names = (transform,) if isinstance(transform, str) else tuple(transform)
    unknown = [n for n in names if n not in _FUNCTIONS]
    if unknown or not names:
        raise SimlabError(f"unknown feature transform {', '.join(map(str, unknown)) or '(none)'}; "
                          f"expected one or more of {', '.join(TRANSFORMS)}")
    return names


def apply_transform(block: np.ndarray, name: str) -> np.ndarray:
    """One transform of ``block`` (site, session, observable), per site and observable:
    (site, length, observable)."""
    block = np.asarray(block, dtype=np.float64)
    if name != "raw" and name != "ranks" and block.shape[1] < 2:
        raise SimlabError(f"feature transform {name!r} needs at least 2 sessions; got {block.shape[1]}")
    return _FUNCTIONS[name](block)


def transformed(block: np.ndarray, transform) -> tuple[np.ndarray, list[str], int]:
    """Every transform of ``transform`` applied to ``block`` (site, session, observable),
    concatenated as channels: (site, channel, length), the transform of each channel
    (transform-major, then observable) and the common length."""
    parts = [(name, apply_transform(block, name)) for name in transform_names(transform)]
    length = max(p.shape[1] for _, p in parts)
    channels, of_channel = [], []
    for name, part in parts:
        pad = length - part.shape[1]
        if pad:
            part = np.concatenate([np.zeros((part.shape[0], pad, part.shape[2])), part], axis=1)
        channels.append(part.transpose(0, 2, 1))  # (site, observable, length)
        of_channel += [name] * part.shape[2]
    return np.concatenate(channels, axis=1), of_channel, length


def channel_name(observable: str, transform: str) -> str:
    """A channel's name: the observable for ``raw`` (as without transforms), else
    ``transform(observable)``."""
    return str(observable) if transform == "raw" else f"{transform}({observable})"
