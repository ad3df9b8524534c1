"""Observables against numpy/scipy computed independently, in float64 from the same inputs.

Percentiles both ways: ``nearest`` (the default) re-implements what the reference's
TensorFlow code does (``tf.contrib.distributions.percentile``: a descending sort, index
``round((n - 1) * (1 - q / 100))`` rounded half to even), ``linear`` is ``np.percentile``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from simlab.recording.observables import (
    FUNCTIONS,
    MEASURES,
    STATISTICS,
    Observable,
    activation_observables,
    activity_change_observables,
    apply_function,
    observables_for,
    percentile_index,
    statistics,
    weight_observables,
)

RTOL = 2e-5
ATOL = 2e-6
SHAPE = (4, 11)  # most tests share one shape: every new shape is a new XLA compile


def tf_nearest_percentile(x, q):
    """TensorFlow contrib's ``percentile(x, q)`` (interpolation "nearest") over the last axis."""
    descending = -np.sort(-x, axis=-1)  # what top_k returns
    index = int(np.round((x.shape[-1] - 1) * (1.0 - q / 100.0)))  # np.round: half to even, as tf.round
    return descending[..., index]


def reference_percentile(x, q, percentiles):
    return tf_nearest_percentile(x, q) if percentiles == "nearest" else np.percentile(x, q, axis=-1)


def reference_statistics(x, percentiles="nearest"):
    """The seven statistics over the last axis, by their textbook definitions (float64)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(-1)
    median = reference_percentile(x, 50, percentiles)
    std = x.std(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack(
            [
                np.sqrt((x**2).sum(-1)),
                mean,
                median,
                reference_percentile(x, 75, percentiles),
                np.var(x, axis=-1),
                3.0 * (mean - median) / std,
                sps.kurtosis(x, axis=-1, fisher=False),
            ],
            axis=-1,
        )


def reference_function(x, name):
    return {"raw": x, "abs": np.abs(x), "sq": np.square(x)}[name]


def sample(shape, seed=0):
    """Skewed, heavy-tailed, offset values so every statistic is away from zero."""
    rng = np.random.default_rng(seed)
    return (rng.standard_t(5, size=shape) * 1.5 + rng.exponential(1.0, size=shape) + 0.3).astype(
        np.float32
    )


def close(got, want):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("percentiles", ["nearest", "linear"])
@pytest.mark.parametrize("n", [1, 2, 6, 11, 64])
def test_statistics_match_numpy_and_scipy_for_odd_and_even_lengths(n, percentiles):
    x = sample((4, n), seed=n)
    got = statistics(x, percentiles=percentiles)
    assert got.shape == (4, 7)
    assert got.dtype == jnp.float32
    want = reference_statistics(x, percentiles)
    close(statistics(x, xp=np, percentiles=percentiles)[:, :5], want[:, :5])
    if n == 1:  # std 0: skew and kurtosis undefined
        close(got[:, :5], want[:, :5])
        assert np.isnan(np.asarray(got[:, 5:])).all()
    else:
        close(got, want)


def test_statistics_reduce_the_last_axis_under_leading_batch_dims():
    x = sample((2, 3, 4, 9))
    got = statistics(x)
    assert got.shape == (2, 3, 4, 7)
    close(got, reference_statistics(x))


def test_statistics_under_jit_and_vmap():
    x = sample((6, 4, 12), seed=1)
    want = reference_statistics(x)
    close(jax.jit(statistics)(x), want)
    close(jax.vmap(statistics)(x), want)


# Worked by hand from TensorFlow's rule (descending order, index round((n - 1)(1 - q)), half
# to even): n -> (median, third quartile) of a shuffled 1..n. The median of an even count is
# the lower middle value when n is a multiple of 4 and the upper one otherwise (n = 2, 6).
NEAREST_BY_HAND = {2: (2, 2), 3: (2, 3), 4: (2, 3), 5: (3, 4), 6: (4, 5), 7: (4, 5), 8: (4, 6)}
LINEAR_BY_HAND = {2: (1.5, 1.75), 3: (2, 2.5), 4: (2.5, 3.25), 5: (3, 4), 6: (3.5, 4.75), 7: (4, 5.5), 8: (4.5, 6.25)}


@pytest.mark.parametrize("n", sorted(NEAREST_BY_HAND))
def test_percentiles_by_hand(n):
    x = np.random.default_rng(n).permutation(np.arange(1, n + 1)).astype(np.float32)
    for method, by_hand in (("nearest", NEAREST_BY_HAND), ("linear", LINEAR_BY_HAND)):
        for xp in (jnp, np):
            got = np.asarray(statistics(x, xp=xp, percentiles=method))
            assert (got[2], got[3]) == by_hand[n], (method, xp.__name__)
    assert [percentile_index(n, 0.5) + 1 for n in sorted(NEAREST_BY_HAND)] == [m for m, _ in NEAREST_BY_HAND.values()]


def test_unknown_percentile_method_is_an_error():
    with pytest.raises(ValueError, match="unknown percentile method 'midpoint'"):
        statistics(np.ones(3, np.float32), percentiles="midpoint")


def test_nearest_skew_uses_the_nearest_median():
    """Skew is 3 (mean - median) / std with the same median: ReLU-like values, most zero."""
    x = np.array([0, 0, 0, 0, 0, 0, 1, 3], dtype=np.float32)  # median: 0 (nearest) or 0 (linear)
    y = np.array([0, 0, 0, 2, 4, 4, 5, 9], dtype=np.float32)  # median: 2 (nearest), 3 (linear)
    mean, std = y.mean(), y.std()
    assert np.asarray(statistics(y))[5] == pytest.approx(3 * (mean - 2) / std, rel=1e-6)
    assert np.asarray(statistics(y, percentiles="linear"))[5] == pytest.approx(3 * (mean - 3) / std, rel=1e-6)
    assert np.asarray(statistics(x))[2] == 0.0


def test_statistics_order_is_STATISTICS():
    x = np.array([1.0, 2.0, 3.0, 10.0], dtype=np.float32)
    got = dict(zip(STATISTICS, np.asarray(statistics(x, percentiles="linear")).tolist()))
    assert got["median"] == pytest.approx(2.5)
    assert got["thirdquartile"] == pytest.approx(4.75)  # 3 + 0.25 * (10 - 3)
    assert got["mean"] == pytest.approx(4.0)
    assert got["var"] == pytest.approx(12.5)
    assert got["norm"] == pytest.approx(np.sqrt(114.0))
    assert got["skew"] == pytest.approx(3 * 1.5 / np.sqrt(12.5), rel=1e-6)
    nearest = dict(zip(STATISTICS, np.asarray(statistics(x)).tolist()))  # the default
    assert (nearest["median"], nearest["thirdquartile"]) == (2.0, 3.0)
    assert nearest["skew"] == pytest.approx(3 * 2.0 / np.sqrt(12.5), rel=1e-6)
    assert {k: v for k, v in nearest.items() if k not in ("median", "thirdquartile", "skew")} == {
        k: v for k, v in got.items() if k not in ("median", "thirdquartile", "skew")
    }


@pytest.mark.parametrize("value", [0.0, 0.1, -3.7, 1e-3])
def test_constant_input_gives_nan_not_inf_for_skew_and_kurtosis(value):
    got = np.asarray(statistics(np.full(SHAPE, value, dtype=np.float32)))
    assert not np.isinf(got).any()
    assert np.isnan(got[:, 5:]).all()
    assert (got[:, 4] == 0).all()  # variance exactly zero
    np.testing.assert_allclose(got[:, 1], value, rtol=1e-6)
    np.testing.assert_allclose(got[:, 0], abs(value) * np.sqrt(SHAPE[-1]), rtol=1e-6)


def test_nan_input_makes_every_statistic_nan():
    x = sample(SHAPE)
    x[1, 2] = np.nan
    got = np.asarray(statistics(x))
    assert np.isnan(got[1]).all()
    assert np.isfinite(got[0]).all()


def test_statistics_do_not_overflow_before_the_answer_does():
    """Skew and kurtosis are scale-free: huge or tiny values must not make them inf or 0."""
    base = sample(SHAPE, seed=4)
    for scale in (1e15, 1e-15):
        got = np.asarray(statistics(base * np.float32(scale)))
        close(got[:, 5:], reference_statistics(base)[:, 5:])
        np.testing.assert_allclose(got[:, 0], reference_statistics(base)[:, 0] * scale, rtol=RTOL)


def test_statistics_of_empty_axis_is_an_error():
    with pytest.raises(ValueError, match="at least one value"):
        statistics(np.zeros((3, 0), dtype=np.float32))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions(name):
    x = sample(SHAPE)
    got = apply_function(x, name)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), reference_function(x, name).astype(np.float32))


def test_unknown_function_is_an_error():
    with pytest.raises(ValueError, match="unknown function"):
        apply_function(np.zeros(3), "log")


@pytest.mark.parametrize("percentiles", ["nearest", "linear"])
def test_weight_observables_are_each_function_then_statistics_over_synapses(percentiles):
    w = sample((2, 3, 50), seed=2)  # two leading batch dims
    got = weight_observables(w, percentiles=percentiles)
    assert got.shape == (2, 3, 21)
    assert got.dtype == jnp.float32
    got = np.asarray(got)
    want = np.concatenate([reference_statistics(reference_function(w, f), percentiles) for f in FUNCTIONS], -1)
    close(got, want)
    if percentiles == "nearest":  # the default
        close(jax.jit(jax.vmap(weight_observables))(w), want)
    for i, obs in enumerate(observables_for("weight")):
        stat = STATISTICS.index(obs.statistic)
        close(got[..., i], reference_statistics(reference_function(w, obs.function), percentiles)[..., stat])


@pytest.mark.parametrize("percentiles", ["nearest", "linear"])
def test_activation_observables_are_statistics_over_units_then_mean_over_stimuli(percentiles):
    a = sample((3, 8, 20), seed=3)  # [subject, stimulus, unit]
    got = activation_observables(a, percentiles=percentiles)
    assert got.shape == (3, 21)
    want = np.empty((3, 21))
    for s in range(3):
        for fi, f in enumerate(FUNCTIONS):
            per_stimulus = [reference_statistics(reference_function(a[s, k], f), percentiles) for k in range(8)]
            want[s, fi * 7 : (fi + 1) * 7] = np.mean(per_stimulus, axis=0)
    close(got, want)
    if percentiles == "nearest":  # the default
        close(jax.jit(jax.vmap(activation_observables))(a), want)


def test_activation_observables_nan_for_one_stimulus_makes_the_site_nan():
    a = sample((2, 4, 6))
    a[1, 2, :] = 0.0  # all units silent for one stimulus: skew and kurtosis undefined there
    got = np.asarray(activation_observables(a))
    names = [o.name for o in observables_for("activation")]
    for i, name in enumerate(names):
        undefined = name.endswith(("_skew", "_kurtosis"))
        assert np.isnan(got[1, i]) == undefined, name
    assert np.isfinite(got[0]).all()
    assert not np.isinf(got).any()


def test_activity_change_observables_by_hand():
    v = np.array([[1.0, -2.0, 3.0, -4.0], [0.5, 0.5, 0.5, -0.5]], dtype=np.float32)
    got = np.asarray(activity_change_observables(v))
    want = np.array([[-0.5, 2.5, 7.5], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(got, want, rtol=1e-7)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(activity_change_observables))(v)), want)


def test_observable_names_and_order():
    weight = observables_for("weight")
    assert len(weight) == 21
    assert [o.name for o in weight[:7]] == [f"weight_raw_{s}" for s in STATISTICS]
    assert [o.function for o in weight] == [f for f in FUNCTIONS for _ in STATISTICS]
    assert weight[7] == Observable("weight_abs_norm", "weight", "abs", "norm")
    assert observables_for("activation")[-1] == Observable(
        "activation_sq_kurtosis", "activation", "sq", "kurtosis"
    )
    assert observables_for("activity_change") == (
        Observable("activity_change_raw", "activity_change", "raw", "id"),
        Observable("activity_change_abs", "activity_change", "abs", "id"),
        Observable("activity_change_sq", "activity_change", "sq", "id"),
    )
    for measure in MEASURES:
        for o in observables_for(measure):
            assert o.name == (
                f"{o.measure}_{o.function}"
                if measure == "activity_change"
                else f"{o.measure}_{o.function}_{o.statistic}"
            )
    with pytest.raises(ValueError, match="unknown measure"):
        observables_for("calcium")
