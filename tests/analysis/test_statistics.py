"""Comparison statistics against scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from simlab.analysis.statistics import compare, compare_family, compare_within, holm, mcnemar_paired, paired_split_tests
from simlab.errors import SimlabError


def test_paired_tests_match_scipy_and_hand():
    a = np.array([0.80, 0.75, 0.90, 0.85, 0.70, 0.88, 0.79, 0.83, 0.91, 0.77])
    b = np.array([0.70, 0.72, 0.81, 0.86, 0.60, 0.80, 0.74, 0.79, 0.85, 0.70])
    out = paired_split_tests(a, b)
    d = a - b
    t_hand = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert out["ttest_statistic"] == pytest.approx(t_hand)
    assert out["ttest_pvalue"] == pytest.approx(2 * stats.t.sf(abs(t_hand), len(d) - 1))
    assert out["ttest_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert out["mean_difference"] == pytest.approx(d.mean()) and out["n_splits"] == 10


def test_paired_tests_identical_and_single_split():
    a = np.array([0.5, 0.6, 0.7])
    same = paired_split_tests(a, a)
    assert same["ttest_pvalue"] == 1.0 and same["wilcoxon_pvalue"] == 1.0
    one = paired_split_tests([0.5], [0.4])
    assert np.isnan(one["ttest_pvalue"])


def test_mcnemar_exact_and_chi2_by_hand():
    truth = np.array(["x"] * 40)
    # a right, b wrong on 7; a wrong, b right on 2; both right on 30; both wrong on 1
    pa = np.array(["x"] * 7 + ["y"] * 2 + ["x"] * 30 + ["y"])
    pb = np.array(["y"] * 7 + ["x"] * 2 + ["x"] * 30 + ["y"])
    out = mcnemar_paired(pa, pb, truth)
    assert (out["a_only"], out["b_only"], out["n_paired"]) == (7, 2, 40)
    assert out["mcnemar_exact"]
    assert out["mcnemar_pvalue"] == pytest.approx(min(1.0, 2 * stats.binom.cdf(2, 9, 0.5)))
    # many discordant pairs: chi-square with continuity correction
    pa = np.array(["x"] * 30 + ["y"] * 12 + [""] * 5)
    pb = np.array(["y"] * 30 + ["x"] * 12 + ["x"] * 5)  # "" = not tested: left out
    out = mcnemar_paired(pa, pb, np.array(["x"] * 47))
    chi2 = (abs(30 - 12) - 1) ** 2 / 42
    assert not out["mcnemar_exact"] and out["n_paired"] == 42
    assert out["mcnemar_statistic"] == pytest.approx(chi2)
    assert out["mcnemar_pvalue"] == pytest.approx(stats.chi2.sf(chi2, 1))


def test_holm_by_hand_with_nan():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.20])
    adjusted, reject = holm(p, alpha=0.05)
    # sorted finite: 0.01, 0.03, 0.04, 0.20 with multipliers 4, 3, 2, 1, then running max
    hand = {0.01: 0.04, 0.03: 0.09, 0.04: 0.09, 0.20: 0.20}
    for raw, adj in zip(p, adjusted):
        if np.isnan(raw):
            assert np.isnan(adj)
        else:
            assert adj == pytest.approx(hand[raw])
    assert reject.tolist() == [True, False, False, False, False]


def _results(seed=0, n_sites=12, n_splits=6):
    """A results-shaped Dataset: feature sets 'good' (mostly right) and 'bad' (coin flips)."""
    rng = np.random.default_rng(seed)
    labels = np.array(["p", "q"])[np.arange(n_sites) % 2]
    other = np.where(labels == "p", "q", "p")
    pred = np.full((2, n_sites, n_splits), "", dtype="<U1")
    test_sets = [np.sort(rng.choice(n_sites, 6, replace=False)) for _ in range(n_splits)]
    for s, test in enumerate(test_sets):
        pred[0, test, s] = np.where(rng.random(6) < 0.95, labels[test], other[test])
        pred[1, test, s] = np.where(rng.random(6) < 0.5, labels[test], other[test])
    tested = pred != ""
    accuracy = ((pred == labels[None, :, None]) & tested).sum(1) / tested.sum(1)
    return xr.Dataset(
        {
            "accuracy": (("feature_set", "split"), accuracy),
            "prediction": (("feature_set", "site", "split"), pred),
            "test_sites": (("split",), np.array([",".join(map(str, t)) for t in test_sets])),
        },
        coords={"feature_set": ["good", "bad"], "site": [f"s{i}" for i in range(n_sites)],
                "site_label": (("site",), labels), "split": np.arange(n_splits)},
    )


def test_compare_within_pairs_splits_and_sites():
    res = _results()
    table = compare_within(res, "feature_set", [("good", "bad")])
    row = table.loc["good vs bad"]
    acc = res["accuracy"]
    assert row["ttest_pvalue"] == pytest.approx(
        stats.ttest_rel(acc.sel(feature_set="good"), acc.sel(feature_set="bad")).pvalue)
    pred, labels = res["prediction"].values, res["site_label"].values[:, None]
    tested = pred[0] != ""
    good_right, bad_right = (pred[0] == labels) & tested, (pred[1] == labels) & tested
    assert row["a_only"] == int((good_right & ~bad_right).sum())
    assert row["b_only"] == int((~good_right & bad_right & tested).sum())
    assert row["ttest_pvalue_holm"] == pytest.approx(row["ttest_pvalue"])  # family of one
    assert row["mean_a"] > row["mean_b"]


def test_compare_family_holm_and_refusals():
    a, b = _results(seed=1), _results(seed=1)
    fam = compare_family({"x": (a.sel(feature_set="good"), a.sel(feature_set="bad")),
                          "y": (b.sel(feature_set="bad"), b.sel(feature_set="good"))})
    adjusted, _ = holm(fam["mcnemar_pvalue"].values)
    np.testing.assert_allclose(fam["mcnemar_pvalue_holm"].values, adjusted)
    with pytest.raises(SimlabError, match="different sites"):
        compare(_results(seed=1).sel(feature_set="good"), _results(seed=2).sel(feature_set="good"))
    with pytest.raises(SimlabError, match="besides split"):
        compare(a, b)
    with pytest.raises(SimlabError, match="not in results"):
        compare_within(a, "feature_set", [("good", "ugly")])
