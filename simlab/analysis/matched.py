"""The matched-hyperparameter control: is a rule named by its recordings, or by the learning
rate it was trained at?

Rules are often trained at rates of their own (Adam near 1e-3, SGD with momentum near 1e-1),
so an identifier could name the rule from anything that follows the rate (how fast weights
grow) rather than from the rule. For every pair of classes (rules) A and B, subjects of A are
matched one-to-one with subjects of B of the same architecture, task and batch size whose
learning rates differ by at most a ratio ``caliper`` (greedy nearest on the log scale,
:func:`match_rates`). On the matched subjects only, A is identified against B with identify's
classifiers, features and settings, on random splits that keep each matched pair on one side
(:func:`unit_splits`; with ``group_by: population``, every pair of a stratum); on the same
splits a classifier that sees only the log learning rate (and batch size) checks that
matching removed the rate cue: it should sit near chance (0.5), while before matching (all
subjects of the pair, identify's balanced splits) it may name the rule outright.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from simlab.analysis.classifiers import Layout, classifier_label
from simlab.analysis.identify import (
    FeatureSet,
    _feature_sets,
    evaluate_feature_sets,
    prepare_splits,
    select_sites,
)
from simlab.errors import SimlabError
from simlab.specs.analyses import IdentifySpec

__all__ = ["MIN_MATCHED", "RATE", "STRATA", "attach_matched", "format_matched", "match_rates", "matched_control",
           "unit_splits"]

SCHEMA = "simlab.matched/1"
RATE = "learning_rate"
STRATA = ("architecture", "task", "batch_size")  # matched exactly: the other population factors
MIN_MATCHED = 3
"""Matched subjects per class a pair needs before it is identified: with fewer, a balanced
split trains on one or two networks per class and its accuracy says little."""


def match_rates(rates_a, rates_b, strata_a=None, strata_b=None, caliper: float = 1.5) -> list[tuple[int, int]]:
    """One-to-one matches between subjects of A and of B: same stratum, rates within ``caliper``.

    Greedy nearest matching on the log rate: every admissible pair (same stratum, rate ratio
    at most ``caliper``) is taken in order of increasing ``|log(rate_a / rate_b)|`` (ties by
    position in A, then in B) when neither subject is matched yet. Returns ``(i, j)`` position
    pairs into ``rates_a`` and ``rates_b``, sorted by ``i``. A rate that is not a positive
    number matches nothing.
    """
    if caliper <= 1.0:
        raise SimlabError(f"matched caliper is a ratio of learning rates above 1; got {caliper:g}")
    rates_a = np.asarray(rates_a, dtype=np.float64)
    rates_b = np.asarray(rates_b, dtype=np.float64)
    strata_a = np.zeros(len(rates_a), int) if strata_a is None else np.asarray(strata_a)
    strata_b = np.zeros(len(rates_b), int) if strata_b is None else np.asarray(strata_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(np.log(rates_a)[:, None] - np.log(rates_b)[None, :])
    admissible = (strata_a[:, None] == strata_b[None, :]) & np.isfinite(gap) & (gap <= np.log(caliper) + 1e-12)
    i_all, j_all = np.nonzero(admissible)
    order = np.lexsort((j_all, i_all, gap[i_all, j_all]))
    used_a, used_b, pairs = set(), set(), []
    for i, j in zip(i_all[order], j_all[order]):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((int(i), int(j)))
    return sorted(pairs)


def _strata(ds: xr.Dataset, target: str) -> tuple[np.ndarray, list[str]]:
    """Each subject's stratum (its levels of the other population factors) and those factors."""
    factors = [f for f in STRATA if f != target and f in ds.coords and ds.coords[f].dims == ("subject",)]
    if not factors:
        return np.full(ds.sizes["subject"], ""), factors
    values = [ds.coords[f].values.astype(str) for f in factors]
    return np.array(["|".join(v[i] for v in values) for i in range(ds.sizes["subject"])]), factors


def _rate_features(sites, ds: xr.Dataset) -> FeatureSet:
    """The learning rate alone (its log) and the batch size, per site from its subject."""
    columns = [np.log(ds.coords[RATE].values.astype(np.float64))[sites.subject_index]]
    names = [f"log_{RATE}"]
    if "batch_size" in ds.coords and ds.coords["batch_size"].dims == ("subject",):
        columns.append(ds.coords["batch_size"].values.astype(np.float64)[sites.subject_index])
        names.append("batch_size")
    X = np.stack(columns, axis=1)
    n = len(names)
    return FeatureSet(X, Layout(1, n, 0), names, [], "rate", np.array(names), np.full(n, ""), np.zeros(n, np.int64))


def unit_splits(units, n_splits: int, test_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random train/test splits of subjects that keep each unit (a matched pair, or every
    matched pair of a stratum) wholly on one side.

    A split tests ``max(1, round(test_fraction * units))`` units (at most all but one), so
    both classes are tested equally often. Splitting over pairs, not subjects, matters: a
    subject tested while its partner trains would be named after its partner's rule by any
    classifier that relies on the rate, pushing accuracy below chance. Split ``i`` draws from
    ``np.random.default_rng([seed, i])``. Returns (train, test) subject positions.
    """
    units = np.asarray(units)
    names = np.unique(units)
    if len(names) < 2:
        raise SimlabError(f"the matched subjects form {len(names)} unit(s) to split; need at least 2")
    n_test = min(len(names) - 1, max(1, int(np.floor(test_fraction * len(names) + 0.5))))
    splits = []
    for i in range(n_splits):
        test_units = np.random.default_rng([seed, i]).choice(names, n_test, replace=False)
        is_test = np.isin(units, test_units)
        splits.append((np.flatnonzero(~is_test), np.flatnonzero(is_test)))
    return splits


def _pair_evaluation(ds: xr.Dataset, units, spec: IdentifySpec, n_jobs, observables: bool = True) -> xr.Dataset:
    """identify's evaluation of the matched subjects ``ds`` on :func:`unit_splits` (inner
    cross-validation grouped by the same units): the observables' feature sets, or the rate alone."""
    splits = unit_splits(units, spec.splits, spec.test_fraction, spec.seed)
    sites, _, site_splits = prepare_splits(ds, spec, splits)
    groups = np.asarray(units)[sites.subject_index]
    if not observables:
        return evaluate_feature_sets(sites, groups, site_splits, {"rate": _rate_features(sites, ds)}, {"rate": []},
                                     [], spec, n_jobs=n_jobs, explicit=True)
    sets, dropped, empty = _feature_sets(sites, spec.features, spec.transform)
    if not sets:
        raise SimlabError("no observable is finite for every matched site and session")
    return evaluate_feature_sets(sites, groups, site_splits, sets, dropped, empty, spec, n_jobs=n_jobs, explicit=True)


def _rate_before(ds: xr.Dataset, spec: IdentifySpec, n_jobs) -> xr.Dataset:
    """The rate alone on all the pair's subjects, on identify's balanced splits."""
    sites, groups, splits = prepare_splits(ds, spec)
    return evaluate_feature_sets(sites, groups, splits, {"rate": _rate_features(sites, ds)}, {"rate": []}, [],
                                 spec, n_jobs=n_jobs)


def matched_control(ds: xr.Dataset, spec: IdentifySpec = IdentifySpec(), caliper: float | None = None,
                    progress: bool = False, n_jobs: int | None = None) -> xr.Dataset:
    """Pairwise identification of ``spec.target`` on subjects matched on learning rate.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording whose subjects carry a ``learning_rate`` coordinate (a protocol's rate,
        or each subject's own under ``training.spread``).
    spec : IdentifySpec
        identify's settings: target, classifiers, features, transform, splits, group_by,
        bootstrap, seed, health. Every pair is split and scored as identify would.
    caliper : float, optional
        The largest ratio of the learning rates of a matched pair (default
        ``spec.matched_caliper``, 1.5).
    progress : bool
        A progress bar over the pairs.
    n_jobs : int, optional
        Worker processes, as for identify.

    Returns
    -------
    xarray.Dataset
        Over ``pair`` (``A vs B``): ``matched_subjects`` (subjects of each class matched),
        ``matched_candidates`` (usable subjects of A and of B), ``matched_log_gap`` (largest
        ``|log rate ratio|`` of a matched pair), ``matched_status`` (``ok`` or why the pair was
        not identified), ``matched_accuracy`` and its subject bootstrap ``matched_boot_ci``
        (pair, classifier, feature_set), ``matched_rate_accuracy`` and
        ``matched_rate_boot_ci`` (the learning rate alone, same splits), and
        ``matched_rate_unmatched`` (the rate alone on all the pair's subjects: the cue matching
        removes). ``matched_note`` (attrs) says in one line when nothing could be matched.

    Examples
    --------
    >>> control = matched_control(recording, IdentifySpec(classifiers=["random_forest"]))   # doctest: +SKIP
    >>> print(format_matched(control))                                                     # doctest: +SKIP
    """
    caliper = spec.matched_caliper if caliper is None else float(caliper)
    if caliper <= 1.0:
        raise SimlabError(f"matched caliper is a ratio of learning rates above 1; got {caliper:g}")
    inner = IdentifySpec(**{**spec.model_dump(), "matched_control": False, "report_transfer": False,
                            "importance": False})
    sites = select_sites(ds, spec.target, spec.health)
    classes = list(sites.classes)
    usable = np.zeros(ds.sizes["subject"], bool)
    usable[sites.subject_index] = True
    label_of = np.full(ds.sizes["subject"], "", dtype=object)
    label_of[sites.subject_index] = sites.labels
    strata, strata_factors = _strata(ds, spec.target)
    clf_names = [classifier_label(c) for c in spec.classifiers]
    attrs = {
        "schema": SCHEMA,
        "title": f"matched-{RATE} control of {spec.target} identification",
        "target": spec.target,
        "chance": 0.5,
        "matched_caliper": caliper,
        "matched_min_subjects": MIN_MATCHED,
        "matched_strata": ",".join(strata_factors),
        "matched_matching": f"greedy nearest on log {RATE} within {', '.join(strata_factors) or 'the cohort'}, "
        f"rate ratio at most {caliper:g}, one-to-one",
        "matched_splits": f"{spec.splits} random splits over matched pairs"
        + (" grouped by stratum" if spec.group_by == "population" else "")
        + f", test fraction {spec.test_fraction:g}; inner cross-validation grouped the same way",
        "matched_rate_features": f"log {RATE}" + (" and batch_size" if "batch_size" in ds.coords else ""),
        "group_by": spec.group_by,
        "transform": ",".join(spec.transforms),
        "splits": int(spec.splits),
        "matched_note": "",
    }
    if RATE not in ds.coords or ds.coords[RATE].dims != ("subject",):
        attrs["matched_note"] = f"the subjects carry no {RATE} coordinate: nothing to match on"
        return _dataset([], clf_names, [], attrs)
    rates = ds.coords[RATE].values.astype(np.float64)
    pairs = list(combinations(classes, 2))
    rows, feature_sets = [], []
    for a, b in tqdm(pairs, desc="matched control", unit="pair", disable=not progress):
        ia = np.flatnonzero(usable & (label_of == a))
        ib = np.flatnonzero(usable & (label_of == b))
        matches = match_rates(rates[ia], rates[ib], strata[ia], strata[ib], caliper)
        ma = ia[[i for i, _ in matches]] if matches else np.array([], int)
        mb = ib[[j for _, j in matches]] if matches else np.array([], int)
        row = {"pair": (a, b), "n": len(matches), "candidates": (len(ia), len(ib)),
               "gap": float(np.max(np.abs(np.log(rates[ma] / rates[mb])))) if matches else np.nan,
               "names": ",".join(f"{ds['subject'].values[i]}={ds['subject'].values[j]}" for i, j in zip(ma, mb)),
               "status": "ok", "observables": None, "rate": None, "unmatched": None}
        rated = np.sort(np.concatenate([ia, ib]))
        rated = rated[np.isfinite(rates[rated]) & (rates[rated] > 0)]
        try:
            row["unmatched"] = _rate_before(ds.isel(subject=rated), inner, n_jobs)
        except SimlabError:
            pass  # too few subjects of the pair to split at all; the status below says so
        if len(matches) < MIN_MATCHED:
            row["status"] = f"too few matches: {len(matches)} per class (need {MIN_MATCHED})"
        else:
            order = np.argsort(np.concatenate([ma, mb]))
            subset = ds.isel(subject=np.concatenate([ma, mb])[order])
            # a split's unit: the matched pair, or (group_by population) every pair of a stratum
            units = (np.concatenate([strata[ma], strata[ma]]) if spec.group_by == "population"
                     else np.tile(np.arange(len(matches)), 2))[order]
            try:
                row["observables"] = _pair_evaluation(subset, units, inner, n_jobs)
                row["rate"] = _pair_evaluation(subset, units, inner, n_jobs, observables=False)
                feature_sets += [f for f in row["observables"]["feature_set"].values if f not in feature_sets]
            except SimlabError as exc:
                row["status"] = f"not identified: {exc}"
        rows.append(row)
    if not any(r["n"] for r in rows):
        attrs["matched_note"] = _no_match_note(rates, usable, label_of, classes, caliper, strata_factors)
    return _dataset(rows, clf_names, [str(f) for f in feature_sets], attrs)


def _no_match_note(rates, usable, label_of, classes, caliper, strata_factors) -> str:
    """One line: why no pair of classes has a single match."""
    per_class = {c: np.unique(rates[usable & (label_of == c)]) for c in classes}
    if all(len(v) == 1 for v in per_class.values()):
        levels = ", ".join(f"{c} {v[0]:.3g}" for c, v in per_class.items())
        return (f"every subject of a class has the same {RATE} ({levels}) and no two classes share one within "
                f"a ratio of {caliper:g}: no pair matches")
    where = f" and the same {', '.join(strata_factors)}" if strata_factors else ""
    return f"no two subjects of different classes have {RATE}s within a ratio of {caliper:g}{where}: no pair matches"


def _dataset(rows, clf_names, feature_sets, attrs) -> xr.Dataset:
    n_p, n_c, n_f = len(rows), len(clf_names), len(feature_sets)
    acc = np.full((n_p, n_c, n_f), np.nan)
    boot = np.full((n_p, n_c, n_f, 2), np.nan)
    rate = np.full((n_p, n_c), np.nan)
    rate_boot = np.full((n_p, n_c, 2), np.nan)
    unmatched = np.full((n_p, n_c), np.nan)
    for p, row in enumerate(rows):
        if row["observables"] is not None:
            res = row["observables"].reindex(feature_set=feature_sets)
            acc[p] = res["accuracy_mean"].transpose("classifier", "feature_set").values
            boot[p] = res["accuracy_mean_boot_ci"].transpose("classifier", "feature_set", "bound").values
        if row["rate"] is not None:
            rate[p] = row["rate"]["accuracy_mean"].sel(feature_set="rate").values
            rate_boot[p] = row["rate"]["accuracy_mean_boot_ci"].sel(feature_set="rate").values
        if row["unmatched"] is not None:
            unmatched[p] = row["unmatched"]["accuracy_mean"].sel(feature_set="rate").values
    per_pair = ("pair",)
    data_vars = {
        "matched_subjects": (per_pair, np.array([r["n"] for r in rows], np.int64),
                             {"long_name": "subjects of each class matched (one-to-one pairs)"}),
        "matched_candidates": (per_pair + ("side",), np.array([r["candidates"] for r in rows], np.int64).reshape(n_p, 2),
                               {"long_name": "usable subjects of each class of the pair"}),
        "matched_log_gap": (per_pair, np.array([r["gap"] for r in rows], np.float64),
                            {"long_name": f"largest |log {RATE} ratio| of a matched pair"}),
        "matched_status": (per_pair, np.array([r["status"] for r in rows], dtype=str)),
        "matched_pairs": (per_pair, np.array([r["names"] for r in rows], dtype=str),
                          {"long_name": "matched subjects, A=B, comma-separated"}),
        "matched_accuracy": (per_pair + ("classifier", "feature_set"), acc, {
            "long_name": "pairwise test accuracy on the matched subjects (mean over splits)", "units": "1"}),
        "matched_boot_ci": (per_pair + ("classifier", "feature_set", "bound"), boot, {
            "long_name": "subject bootstrap 95% interval over test predictions pooled across splits"}),
        "matched_rate_accuracy": (per_pair + ("classifier",), rate, {
            "long_name": f"accuracy of log {RATE} (and batch size) alone on the same splits", "units": "1"}),
        "matched_rate_boot_ci": (per_pair + ("classifier", "bound"), rate_boot, {
            "long_name": "subject bootstrap 95% interval of the rate-only accuracy"}),
        "matched_rate_unmatched": (per_pair + ("classifier",), unmatched, {
            "long_name": f"accuracy of log {RATE} alone on all usable subjects of the pair (before matching)",
            "units": "1"}),
    }
    coords = {
        "pair": np.array([f"{a} vs {b}" for a, b in (r["pair"] for r in rows)], dtype=str),
        "pair_a": (per_pair, np.array([r["pair"][0] for r in rows], dtype=str)),
        "pair_b": (per_pair, np.array([r["pair"][1] for r in rows], dtype=str)),
        "side": np.array(["a", "b"], dtype=str),
        "classifier": np.array(clf_names, dtype=str),
        "feature_set": np.array(feature_sets, dtype=str),
        "bound": np.array(["lower", "upper"], dtype=str),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


MATCHED_ATTRS = ("matched_caliper", "matched_min_subjects", "matched_strata", "matched_matching", "matched_splits",
                 "matched_rate_features", "matched_note")


def attach_matched(results: xr.Dataset, control: xr.Dataset) -> xr.Dataset:
    """identify's results with the matched control's variables (on identify's classifiers
    and feature sets) and settings added, so one file and one table hold both."""
    names = [v for v in control.data_vars if v.startswith("matched_")]
    control = control.reindex(classifier=results["classifier"].values, feature_set=results["feature_set"].values)
    extra = control[names].drop_vars([c for c in ("classifier", "feature_set", "bound") if c in control.coords])
    out = results.assign({name: extra[name] for name in names})
    out.attrs.update({k: control.attrs[k] for k in MATCHED_ATTRS})
    return out


def format_matched(results: xr.Dataset) -> str:
    """One row per pair of classes: matched subjects, accuracy on them per feature set
    (subject bootstrap 95%), the rate alone on the same splits and before matching."""
    a = results.attrs
    head = (f"matched-{RATE} control: each pair of classes on subjects matched one-to-one on {RATE} "
            f"(ratio <= {float(a['matched_caliper']):g}, same {a['matched_strata'].replace(',', ', ') or 'cohort'}; "
            f"at least {a['matched_min_subjects']} per class); chance 0.500")
    if "pair" not in results.dims or results.sizes["pair"] == 0 or (a.get("matched_note") and
                                                                   not int(results["matched_subjects"].sum())):
        return f"{head}\n  {a.get('matched_note') or 'fewer than 2 classes: no pair'}"
    sets = [str(f) for f in results["feature_set"].values]
    shown = sets if len(sets) <= 4 else sets[-1:]
    pairs = [str(p) for p in results["pair"].values]
    first = max(len("pair"), *(len(p) for p in pairs))
    lines = [head, f"  accuracy (subject bootstrap 95%); rate only: {a['matched_rate_features']} on the same splits, "
             "and on all the pair's subjects before matching"]

    def cell(value, ci=None) -> str:
        if np.isnan(value):
            return "-"
        return f"{value:.3f}" + (f" ({ci[0]:.2f}, {ci[1]:.2f})" if ci is not None and np.isfinite(ci).all() else "")

    for clf in results["classifier"].values:
        r = results.sel(classifier=clf)
        cols = [*shown, "rate only", "rate before"]
        body = []
        for p in pairs:
            row = r.sel(pair=p)
            cells = [cell(float(row["matched_accuracy"].sel(feature_set=f)),
                          row["matched_boot_ci"].sel(feature_set=f).values) for f in shown]
            cells += [cell(float(row["matched_rate_accuracy"]), row["matched_rate_boot_ci"].values),
                      cell(float(row["matched_rate_unmatched"]))]
            n = int(row["matched_subjects"])
            status = str(row["matched_status"].values)
            body.append((p, f"{n}/{int(row['matched_candidates'][0])}+{int(row['matched_candidates'][1])}",
                         cells, "" if status == "ok" else status))
        widths = [max(len(c), *(len(b[2][i]) for b in body)) for i, c in enumerate(cols)]
        lines += ["", f"  {clf}:", "  " + f"{'pair':<{first}}  {'matched':>9}  "
                  + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
        for p, n, cells, status in body:
            lines.append("  " + f"{p:<{first}}  {n:>9}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths))
                         + (f"  {status}" if status else ""))
    lines.append(f"  matched: subjects per class matched / usable subjects of each class; {a['matched_matching']}; "
                 f"{a.get('matched_splits', '')}")
    return "\n".join(lines)
