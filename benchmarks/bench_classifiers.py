"""Which classifier to identify with: accuracy and time side by side, on the same features.

Runs ``simlab.identify`` on one run directory once per classifier (the same splits, feature
sets and preset), in one process (``n_jobs=1``: seconds comparable between classifiers), and
prints each classifier's mean accuracy ± s.e.m. per feature set and its seconds per fit.

    python benchmarks/bench_classifiers.py RUN_DIR [--splits 10] [--classifiers random_forest,gradient_boosting,linear_svm]
"""

from __future__ import annotations

import argparse
import json
import time

import simlab

DEFAULT = "random_forest,gradient_boosting,extra_trees,linear_svm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory (all its rigs' recordings)")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--classifiers", default=DEFAULT, help=f"comma-separated (default {DEFAULT})")
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args()
    run = simlab.open_run(args.run)
    rows = []
    for name in args.classifiers.split(","):
        started = time.perf_counter()
        result = simlab.identify(run, classifiers=[name], splits=args.splits, n_jobs=1)
        seconds = time.perf_counter() - started
        accuracy = result["accuracy"].isel(classifier=0)
        fits = accuracy.sizes["feature_set"] * accuracy.sizes["split"]
        row = {"classifier": name, "seconds": seconds, "seconds_per_fit": seconds / fits}
        for feature_set in accuracy["feature_set"].values:
            per_split = accuracy.sel(feature_set=feature_set)
            row[str(feature_set)] = (float(per_split.mean()), float(per_split.std(ddof=1) / per_split.size**0.5))
        rows.append(row)
        cells = "  ".join(f"{k} {v[0]:.3f}±{v[1]:.3f}" for k, v in row.items() if isinstance(v, tuple))
        print(f"{name:<18s} {seconds:7.1f} s ({row['seconds_per_fit']:.2f} s per fit)  {cells}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
