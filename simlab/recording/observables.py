"""Observables: measure x function x statistic, as pure JAX functions.

A rig measures a tensor (weights, activations or layer-wise activity changes), applies a
function (raw, abs, sq) and reduces it with a statistic. Everything here is float32 in,
float32 out, shape-polymorphic over leading batch axes, and works under ``jax.jit`` and
``jax.vmap`` so a rig can record a whole population of subjects in one compiled call.

Definitions (reference/nayebi2020.md, DESIGN.md "Definitions"):

- norm = sqrt(sum x^2); mean; median and thirdquartile are linear-interpolation quantiles 0.5
  and 0.75 (numpy's default ``np.percentile``); var is the population variance (ddof 0);
  skew is Pearson's second coefficient 3 (mean - median) / std; kurtosis is
  E[(x - mean)^4] / var^2 (not excess kurtosis).
- A statistic that is not finite is NaN: skew and kurtosis where all values are equal
  (std 0), and anything that overflows float32. A NaN anywhere in the input makes every
  statistic NaN.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

MEASURES = ("weight", "activation", "activity_change")
FUNCTIONS = ("raw", "abs", "sq")
STATISTICS = ("norm", "mean", "median", "thirdquartile", "var", "skew", "kurtosis")
ACTIVITY_CHANGE_STATISTIC = "id"


class Observable(NamedTuple):
    """One observable: the ``observable`` coordinate value and its three label coordinates."""

    name: str
    measure: str
    function: str
    statistic: str


def observables_for(measure: str) -> tuple[Observable, ...]:
    """The observables a rig of this measure records, in the order its arrays hold them.

    Weight and activation: the 21 function x statistic pairs, function-major (the layout of
    :func:`weight_observables` and :func:`activation_observables`). Activity change: one per
    function, statistic "id" (the value itself, averaged over stimuli).
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")
    if measure == "activity_change":
        return tuple(
            Observable(f"{measure}_{f}", measure, f, ACTIVITY_CHANGE_STATISTIC) for f in FUNCTIONS
        )
    return tuple(
        Observable(f"{measure}_{f}_{s}", measure, f, s) for f in FUNCTIONS for s in STATISTICS
    )


@functools.partial(jax.jit, static_argnames="name")
def apply_function(x, name: str):
    """raw = x, abs = |x|, sq = x**2 (``name`` is static: a Python string)."""
    x = jnp.asarray(x, dtype=jnp.float32)
    if name == "raw":
        return x
    if name == "abs":
        return jnp.abs(x)
    if name == "sq":
        return jnp.square(x)
    raise ValueError(f"unknown function {name!r}; expected one of {FUNCTIONS}")


def _all_functions(x, axis: int):
    """Stack raw, abs and sq of ``x`` along a new ``axis`` (so one sort serves all three)."""
    return jnp.stack([apply_function(x, f) for f in FUNCTIONS], axis=axis)


def _quantile_sorted(xs, q: float):
    """Linear-interpolation quantile of values sorted along the last axis (numpy's default)."""
    n = xs.shape[-1]
    pos = q * (n - 1)
    lo = int(pos)  # floor: pos >= 0
    hi = min(lo + 1, n - 1)
    t = jnp.float32(pos - lo)
    a, b = xs[..., lo], xs[..., hi]
    return a + t * (b - a)


@jax.jit
def statistics(x):
    """The seven statistics of ``x`` over its last axis: shape ``x.shape[:-1] + (7,)``.

    One sort gives the median, the third quartile and the range. Moments are computed on x
    scaled by a power of two near max|x| (exact in floating point), so squares and fourth
    powers neither overflow nor underflow before the answer itself would. Where all values
    are equal the variance is exactly 0 (float32 rounding of the mean would otherwise leave a
    tiny positive variance and make skew rounding noise), and skew and kurtosis are NaN.
    Non-finite results are returned as NaN, never inf.
    """
    x = jnp.asarray(x, dtype=jnp.float32)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("statistics need at least one value along the last axis, got 0")
    nan = jnp.float32(jnp.nan)
    xs = jnp.sort(x, axis=-1)  # NaNs sort last
    lo, hi = xs[..., 0], xs[..., -1]
    has_nan = jnp.isnan(hi)
    constant = lo == hi

    amax = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    _, exponent = jnp.frexp(jnp.where(amax > 0, amax, jnp.float32(1.0)))
    scale = jnp.ldexp(jnp.float32(1.0), exponent)  # 2**e >= max|x|: dividing by it is exact
    xn = x / scale[..., None]

    norm = scale * jnp.sqrt(jnp.sum(jnp.square(xn), axis=-1))
    mean_n = jnp.mean(xn, axis=-1)
    dev = xn - mean_n[..., None]
    var_n = jnp.where(constant, jnp.float32(0.0), jnp.mean(jnp.square(dev), axis=-1))
    std_n = jnp.sqrt(var_n)
    defined = std_n > 0
    safe_std = jnp.where(defined, std_n, jnp.float32(1.0))
    median = _quantile_sorted(xs, 0.5)
    third = _quantile_sorted(xs, 0.75)
    skew = jnp.where(defined, 3.0 * (mean_n - median / scale) / safe_std, nan)
    z2 = jnp.square(dev / safe_std[..., None])
    kurtosis = jnp.where(defined, jnp.mean(jnp.square(z2), axis=-1), nan)
    mean = mean_n * scale
    var = var_n * jnp.square(scale)

    out = jnp.stack([norm, mean, median, third, var, skew, kurtosis], axis=-1)
    out = jnp.where(has_nan[..., None], nan, out)
    return jnp.where(jnp.isfinite(out), out, nan)


@jax.jit
def weight_observables(w):
    """Weight observables: ``w`` [..., n_synapses] -> [..., 21], ordered as
    ``observables_for("weight")`` (each function, then the statistics over synapses)."""
    w = jnp.asarray(w, dtype=jnp.float32)
    stats = statistics(_all_functions(w, axis=-2))  # [..., 3, 7]
    return stats.reshape(stats.shape[:-2] + (len(FUNCTIONS) * len(STATISTICS),))


@jax.jit
def activation_observables(a):
    """Activation observables: ``a`` [..., n_stimuli, n_units] -> [..., 21].

    Statistics over units for each stimulus, then the mean over stimuli; a NaN for any
    stimulus makes the site's value NaN (the mean propagates it).
    """
    a = jnp.asarray(a, dtype=jnp.float32)
    if a.ndim < 2:
        raise ValueError(f"activations need shape [..., n_stimuli, n_units], got {a.shape}")
    stats = statistics(_all_functions(a, axis=-3))  # [..., 3, n_stimuli, 7]
    stats = jnp.mean(stats, axis=-2)  # [..., 3, 7]
    return stats.reshape(stats.shape[:-2] + (len(FUNCTIONS) * len(STATISTICS),))


@jax.jit
def activity_change_observables(v):
    """Activity-change observables: ``v`` [..., n_stimuli] -> [..., 3] (raw, abs, sq).

    The function is applied per stimulus, then the mean over stimuli is taken.
    """
    v = jnp.asarray(v, dtype=jnp.float32)
    if v.ndim < 1:
        raise ValueError(f"activity changes need shape [..., n_stimuli], got {v.shape}")
    out = jnp.mean(_all_functions(v, axis=-1), axis=-2)
    return jnp.where(jnp.isfinite(out), out, jnp.float32(jnp.nan))
