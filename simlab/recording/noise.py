"""Measurement-noise models of the rigs: what an instrument does to the true value x.

With eps ~ N(0, 1) drawn independently per measured value unless stated otherwise:

- ``gaussian`` (the reference's model, any rig): y = x + sigma * eps.
  E[y] = x, Var[y] = sigma^2.
- ``gain`` (any rig): y = x * (1 + sigma * eps_u), one gain per recorded unit and session,
  shared by all stimuli (an electrode's or a pixel's gain drift). For the synapse rig each
  synapse is its own unit; for the paired rig the site's recording is one unit.
  E[y] = x, Var[y] = x^2 sigma^2.
- ``lognormal`` (synapse-size estimates from imaging, any rig): y = x * exp(sigma * eps -
  sigma^2 / 2): errors proportional to size, sign kept. E[y] = x, Var[y] = x^2 (e^{sigma^2} - 1).
- ``poisson`` (electrophysiology): the activation becomes a firing rate r = g * max(x, 0)
  (``rate_gain`` g in Hz per unit of activation), spikes are counted in a window T
  (``count_window``, seconds), n ~ Poisson(r T), and the rig reports the rate estimate in
  activation units, y = n / (g T). E[y] = max(x, 0), Var[y] = max(x, 0) / (g T).
  Counts are drawn with numpy on the host: ``jax.random.poisson`` (a rejection sampler in a
  loop) made re-recording the quickstart cohort take 180 s instead of about 10 s on 2 cores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def add_noise(model: str, values, key, sigma, rate_gain: float, count_window: float, unit_shape):
    """``values`` after measurement noise of ``model``.

    ``unit_shape`` is the shape of one gain draw (``gain`` model): ``values.shape`` with the
    axes that share a gain (stimuli) set to 1.
    """
    if model == "gaussian":
        return values + sigma * jax.random.normal(key, values.shape, values.dtype)
    if model == "gain":
        return values * (1.0 + sigma * jax.random.normal(key, unit_shape, values.dtype))
    if model == "lognormal":
        eps = jax.random.normal(key, values.shape, values.dtype)
        return values * jnp.exp(sigma * eps - 0.5 * sigma**2)
    raise ValueError(f"unknown noise model {model!r} (poisson counts are drawn by poisson_rates)")


def poisson_rates(values: np.ndarray, rng: np.random.Generator, rate_gain: float, count_window: float) -> np.ndarray:
    """Spike counts of rates g * max(x, 0) in a window T, reported as n / (g T) (activation units)."""
    scale = rate_gain * count_window
    return (rng.poisson(scale * np.maximum(values, 0.0)) / scale).astype(np.float32)
