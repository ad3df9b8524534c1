"""How much of the identification features' variance each factor explains, and how much of the
rule's effect depends on the task: the measurement behind "why the rule does not transfer to a
held-out task" in docs/results.md.

    python docs/factor_variance.py runs/nayebi2020 [--transform log_ratio] [--null]

Within each depth group (so the same statistic of early and deep layers is not compared), every
feature column is replaced by its ranks over the sites (no outlier dominates), and a factor's R^2
is its between-level sum of squares over the total. Printed: the median over feature columns,
averaged over depth groups weighted by their sites. ``rule x task`` interaction is R^2 of the
task-by-rule cells minus the two main effects (the design is balanced). ``--null`` permutes
the rule over subjects first (every site of a subject keeps one label): the R^2 a factor with
that many levels reaches with no rule effect at all.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import rankdata

from simlab.analysis.common import open_run_recordings
from simlab.analysis.identify import build_features, depth_groups, select_sites
from simlab.rundir import RunDirectory
from simlab.specs.analyses import DEFAULT_TRANSFORM, TRANSFORMS


def r_squared(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per column of ``y``: the share of its variance that the group means of ``levels`` carry."""
    mean = y.mean(0)
    total = ((y - mean) ** 2).sum(0)
    between = sum((levels == v).sum() * (y[levels == v].mean(0) - mean) ** 2 for v in np.unique(levels))
    return between / np.where(total > 0, total, np.nan)


def _joined(*columns: np.ndarray) -> np.ndarray:
    return np.array(["|".join(parts) for parts in zip(*columns)])


def factor_table(run: str, transform: str, null: bool, seed: int = 0) -> dict[str, float]:
    ds = open_run_recordings(RunDirectory(run)).load()
    sites = select_sites(ds, "learning_rule")
    rule = sites.labels.astype(str)
    if null:
        subjects = np.unique(sites.subject_index)
        first = {s: rule[sites.subject_index == s][0] for s in subjects}
        shuffled = dict(zip(subjects, np.random.default_rng(seed).permutation([first[s] for s in subjects])))
        rule = np.array([shuffled[s] for s in sites.subject_index])
    coord = {name: ds.coords[name].values.astype(str)[sites.subject_index] for name in ("task", "architecture", "batch_size")}
    factors = {"rule": rule, **coord,
               "task x rule": _joined(coord["task"], rule), "architecture x rule": _joined(coord["architecture"], rule)}
    X, _, _ = build_features(sites, np.arange(len(sites.observables)), transform)
    groups = depth_groups(sites)  # in a fixed order, so the sums are the same every run
    X = X[:, : X.shape[1] - len(groups)]  # the depth one-hot is not a feature here
    table = dict.fromkeys(factors, 0.0)
    known = sites.depth != ""
    for depth in groups:
        here = sites.depth == depth
        ranks = np.apply_along_axis(rankdata, 0, X[here])
        for name, levels in factors.items():
            table[name] += here.sum() / known.sum() * float(np.nanmedian(r_squared(ranks, levels[here])))
    table["rule x task interaction"] = table["task x rule"] - table["task"] - table["rule"]
    table["rule x architecture interaction"] = table["architecture x rule"] - table["architecture"] - table["rule"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory with recordings")
    parser.add_argument("--transform", default=DEFAULT_TRANSFORM, choices=TRANSFORMS)
    parser.add_argument("--null", action="store_true", help="permute the rule over subjects first")
    args = parser.parse_args()
    table = factor_table(args.run, args.transform, args.null)
    print(f"median R^2 over feature columns ({args.transform}{', rule permuted' if args.null else ''}):")
    for name, value in table.items():
        print(f"  {name:32s} {value:.3f}")


if __name__ == "__main__":
    main()
