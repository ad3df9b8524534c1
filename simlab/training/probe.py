"""Linear probe: how well a frozen representation separates a task's classes.

The health of a self-supervised subject is not its training loss (NT-Xent values are not
comparable across temperatures and batch sizes) but what its representation makes linearly
decodable: ridge regression from the features to one-hot labels, fitted in closed form on
train examples and scored (argmax) on the test split. Closed form, so deterministic and
cheap enough for every session snapshot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def probe_subsample(n: int, examples: int) -> np.ndarray:
    """Indices of the train examples a probe is fitted on: all of them when there are at most
    ``examples``, else a fixed (seeded, sorted) subsample of that size."""
    if n <= examples:
        return np.arange(n)
    return np.sort(np.random.default_rng(2020).choice(n, size=examples, replace=False))


def ridge_probe(train_features, train_labels, n_classes: int, ridge: float):
    """Fit the probe: returns ``predict(features) -> class`` (a pure JAX function).

    Features are standardized with the train statistics (a constant feature is centred
    only); the weights solve min |Y - F W - c|^2 + ridge * n * |W|^2 with Y the one-hot
    labels and an unpenalized intercept c, in the primal or dual form, whichever is smaller.
    """
    n, d = train_features.shape
    mean = jnp.mean(train_features, axis=0)
    std = jnp.std(train_features, axis=0)
    std = jnp.where(std > 0, std, 1.0)
    f = (train_features - mean) / std
    targets = jax.nn.one_hot(train_labels, n_classes, dtype=f.dtype)
    intercept = jnp.mean(targets, axis=0)
    centred = targets - intercept
    penalty = ridge * n
    if d <= n:
        weights = jnp.linalg.solve(f.T @ f + penalty * jnp.eye(d, dtype=f.dtype), f.T @ centred)
    else:
        weights = f.T @ jnp.linalg.solve(f @ f.T + penalty * jnp.eye(n, dtype=f.dtype), centred)

    def predict(features):
        return jnp.argmax(((features - mean) / std) @ weights + intercept, axis=-1)

    return predict


def probe_accuracy(train_features, train_labels, test_features, test_labels, n_classes: int, ridge: float):
    """Test accuracy of a :func:`ridge_probe` fitted on the train features."""
    predict = ridge_probe(train_features, train_labels, n_classes, ridge)
    return jnp.mean(predict(test_features) == test_labels)
