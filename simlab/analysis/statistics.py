"""Statistics for claims that compare identification conditions.

Two conditions (feature sets, classifiers, rigs, noise levels) evaluated on the *same*
splits are compared

- across splits, pairing each split's accuracy: a paired t-test (statsmodels) and a
  Wilcoxon signed-rank test (scipy; statsmodels has none for paired samples);
- on predictions of the same test sites: McNemar's test (statsmodels) on the sites one
  condition got right and the other wrong, pooled over splits.

A family of comparisons is corrected with Holm's method (statsmodels ``multipletests``).
Results are tidy pandas tables, one row per comparison.

Caveats, also in the tables' docs: splits share training and test subjects, so the paired
tests across splits treat overlapping splits as independent and are optimistic (the known
problem of repeated random splits); McNemar pools predictions over splits, so a site tested
in several splits counts several times. Both are fair for *comparing* conditions on equal
footing, less so as absolute evidence; report them with that in mind.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import wilcoxon
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW

from simlab.errors import SimlabError

__all__ = [
    "TESTS",
    "compare",
    "compare_family",
    "compare_within",
    "holm",
    "mcnemar_paired",
    "paired_split_tests",
]

TESTS = ("ttest", "wilcoxon", "mcnemar")
EXACT_BELOW = 25  # McNemar: exact binomial test when fewer discordant pairs than this


def paired_split_tests(acc_a, acc_b) -> dict:
    """Paired t-test and Wilcoxon signed-rank test of accuracies paired by split.

    NaN p-values where a test is undefined: fewer than 2 splits, or no difference at all.
    """
    a, b = np.asarray(acc_a, dtype=np.float64), np.asarray(acc_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise SimlabError(f"paired accuracies must be 1-d of equal length; got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    diff = a - b
    out = {
        "n_splits": int(len(diff)),
        "mean_a": float(a.mean()) if len(a) else np.nan,
        "mean_b": float(b.mean()) if len(b) else np.nan,
        "mean_difference": float(diff.mean()) if len(diff) else np.nan,
        "ttest_statistic": np.nan,
        "ttest_pvalue": np.nan,
        "wilcoxon_statistic": np.nan,
        "wilcoxon_pvalue": np.nan,
    }
    if len(diff) >= 2 and np.any(diff != diff[0]):
        t, p, _ = DescrStatsW(diff).ttest_mean(0.0)
        out["ttest_statistic"], out["ttest_pvalue"] = float(t), float(p)
    elif len(diff) >= 2 and diff[0] == 0:
        out["ttest_statistic"], out["ttest_pvalue"] = 0.0, 1.0  # identical: no evidence
    if len(diff) >= 1 and np.any(diff != 0):
        w = wilcoxon(a, b, zero_method="wilcox")
        out["wilcoxon_statistic"], out["wilcoxon_pvalue"] = float(w.statistic), float(w.pvalue)
    elif len(diff) >= 1:
        out["wilcoxon_pvalue"] = 1.0
    return out


def mcnemar_paired(pred_a, pred_b, truth) -> dict:
    """McNemar's test on paired predictions of the same samples.

    ``a_only``: samples only ``a`` got right; ``b_only``: only ``b``. Exact (binomial) when
    there are fewer than 25 discordant pairs, else the chi-square test with continuity
    correction. Empty predictions (``""``: not tested) are left out.
    """
    pa, pb, t = (np.asarray(x).astype(str).reshape(-1) for x in (pred_a, pred_b, truth))
    if not (pa.shape == pb.shape == t.shape):
        raise SimlabError(f"paired predictions need equal shapes; got {pa.shape}, {pb.shape}, {t.shape}")
    tested = (pa != "") & (pb != "")
    ra, rb = pa[tested] == t[tested], pb[tested] == t[tested]
    table = np.array([[np.sum(ra & rb), np.sum(ra & ~rb)], [np.sum(~ra & rb), np.sum(~ra & ~rb)]])
    discordant = int(table[0, 1] + table[1, 0])
    out = {"n_paired": int(tested.sum()), "a_only": int(table[0, 1]), "b_only": int(table[1, 0]),
           "mcnemar_statistic": np.nan, "mcnemar_pvalue": np.nan, "mcnemar_exact": discordant < EXACT_BELOW}
    if discordant == 0:
        out["mcnemar_pvalue"] = 1.0 if tested.any() else np.nan
        return out
    result = mcnemar(table, exact=discordant < EXACT_BELOW, correction=True)
    out["mcnemar_statistic"], out["mcnemar_pvalue"] = float(result.statistic), float(result.pvalue)
    return out


def holm(pvalues, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and rejections; NaN p-values stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    reject = np.zeros(p.shape, bool)
    ok = np.isfinite(p)
    if ok.any():
        rej, adj, _, _ = multipletests(p[ok], alpha=alpha, method="holm")
        adjusted[ok], reject[ok] = adj, rej
    return adjusted, reject


def _reduce(condition: xr.Dataset, label: str) -> xr.Dataset:
    """One condition: ``accuracy`` over split only (and ``prediction`` over site, split)."""
    if "accuracy" not in condition:
        raise SimlabError(f"condition {label}: no 'accuracy' to compare")
    extra = [d for d in condition["accuracy"].dims if d != "split"]
    if extra:
        raise SimlabError(
            f"condition {label} still has dimension(s) {', '.join(extra)} besides split; "
            "select one classifier and feature set"
        )
    return condition


def compare(a: xr.Dataset, b: xr.Dataset, tests: Sequence[str] = TESTS) -> dict:
    """Compare two identification results reduced to one condition each (split only).

    Both must come from the same splits: same split count and the same test sites per
    split (checked via ``test_sites`` when present), as results with the same target, seed
    and sites are. McNemar pairs ``prediction`` by site name and split.
    """
    unknown = sorted(set(tests) - set(TESTS))
    if unknown:
        raise SimlabError(f"unknown test(s) {', '.join(unknown)}; expected among {', '.join(TESTS)}")
    a, b = _reduce(a, "a"), _reduce(b, "b")
    if a.sizes.get("split") != b.sizes.get("split"):
        raise SimlabError(f"conditions have {a.sizes.get('split')} and {b.sizes.get('split')} splits; pair them on the same splits")
    if "test_sites" in a and "test_sites" in b and not np.array_equal(
        a["test_sites"].values.astype(str), b["test_sites"].values.astype(str)
    ):
        raise SimlabError("conditions were tested on different sites; compare results of the same splits")
    row = {}
    if {"ttest", "wilcoxon"} & set(tests):
        row.update(paired_split_tests(a["accuracy"].values, b["accuracy"].values))
    if "mcnemar" in tests:
        if "prediction" not in a or "prediction" not in b:
            raise SimlabError("McNemar needs per-site predictions ('prediction') in both results")
        sites = np.intersect1d(a["site"].values.astype(str), b["site"].values.astype(str))
        pa = a["prediction"].sel(site=sites).transpose("site", "split").values
        pb = b["prediction"].sel(site=sites).transpose("site", "split").values
        truth = np.repeat(a["site_label"].sel(site=sites).values.astype(str)[:, None], pa.shape[1], 1)
        row.update(mcnemar_paired(pa, pb, truth))
    return row


def compare_family(pairs: Mapping[str, tuple[xr.Dataset, xr.Dataset]],
                   tests: Sequence[str] = TESTS, alpha: float = 0.05) -> pd.DataFrame:
    """Compare each named pair (a, b) and Holm-correct each test across the family.

    One row per comparison, with ``<test>_pvalue``, ``<test>_pvalue_holm`` and
    ``<test>_reject`` (at ``alpha`` after correction) for each test run.
    """
    if not pairs:
        raise SimlabError("no comparisons to make")
    rows = []
    for name, (a, b) in pairs.items():
        rows.append({"comparison": name, **compare(a, b, tests)})
    table = pd.DataFrame(rows)
    for test in tests:
        col = f"{test}_pvalue"
        if col in table:
            adjusted, reject = holm(table[col].values, alpha)
            table[f"{test}_pvalue_holm"] = adjusted
            table[f"{test}_reject"] = reject
    table.attrs = {
        "correction": f"Holm across the {len(table)} comparisons, per test, alpha={alpha}",
        "ttest": "paired t-test on split accuracies (statsmodels DescrStatsW.ttest_mean of a-b)",
        "wilcoxon": "Wilcoxon signed-rank test on split accuracies (scipy, zero differences dropped)",
        "mcnemar": f"McNemar on per-site predictions pooled over splits (statsmodels; exact below "
        f"{EXACT_BELOW} discordant pairs, else chi-square with continuity correction)",
    }
    return table.set_index("comparison")


def compare_within(results: xr.Dataset, dim: str, pairs: Sequence[tuple[str, str]],
                   tests: Sequence[str] = TESTS, alpha: float = 0.05, **fixed) -> pd.DataFrame:
    """Compare levels of ``dim`` within one results Dataset, e.g. activation vs weight.

    ``fixed`` selects the other dimensions (``classifier="random_forest"``). Example::

        compare_within(res, "feature_set", [("activation", "weight")], classifier="linear_svm")
    """
    if dim not in results.dims:
        raise SimlabError(f"results have no dimension {dim!r}; they have {', '.join(map(str, results.dims))}")
    base = results.sel(fixed) if fixed else results
    levels = set(base[dim].values.astype(str))
    family = {}
    for a, b in pairs:
        for level in (a, b):
            if level not in levels:
                raise SimlabError(f"{dim} {level!r} not in results; choose from {', '.join(sorted(levels))}")
        family[f"{a} vs {b}"] = (base.sel({dim: a}), base.sel({dim: b}))
    table = compare_family(family, tests, alpha)
    table.attrs["dimension"] = dim
    table.attrs["fixed"] = ", ".join(f"{k}={v}" for k, v in fixed.items())
    return table
