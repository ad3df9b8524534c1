"""The transfer table: how far identification carries outside its training cohort.

For each feature transform (or combination) and classifier, side by side: accuracy within the
cohort on splits grouped by subject (identify's number) and by population (replicates that
differ only by seed kept together), and accuracy on a held-out architecture and a held-out
task (leave-one-level-out over every level, pooled over the levels, as ``simlab generalize``
prints it), each with its subject bootstrap 95% interval. Every cell is computed by
:func:`~simlab.analysis.identify.identify` or
:func:`~simlab.analysis.generalization.generalization` with the same settings apart from the
transform and the grouping, so a cell equals the number those give on their own.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from simlab.analysis.identify import identify, select_sites
from simlab.errors import SimlabError
from simlab.specs.analyses import IdentifySpec

__all__ = ["FACTORS", "attach_transfer", "format_transfer", "transfer_table"]

SCHEMA = "simlab.transfer/1"
FACTORS = ("architecture", "task")
WITHIN = ("within", "within_population")


def _name(transform) -> str:
    return transform if isinstance(transform, str) else "+".join(transform)


def _held_out_factors(ds: xr.Dataset, spec: IdentifySpec, factors) -> tuple[list[str], list[str]]:
    """The factors with at least 2 levels among usable subjects, and a note for each other one."""
    sites = select_sites(ds, spec.target, spec.health)
    usable = np.unique(sites.subject_index)
    kept, notes = [], []
    for factor in factors:
        if factor == spec.target:
            notes.append(f"{factor}: the target, not held out")
        elif factor not in ds.coords or ds.coords[factor].dims != ("subject",):
            notes.append(f"{factor}: not a subject coordinate of the recording")
        elif len(levels := np.unique(ds.coords[factor].values[usable])) < 2:
            notes.append(f"{factor}: one level ({', '.join(str(v) for v in levels)}), not held out")
        else:
            kept.append(factor)
    return kept, notes


def transfer_table(ds: xr.Dataset, spec: IdentifySpec = IdentifySpec(), transforms=None, factors=FACTORS,
                   progress: bool = False, n_jobs: int | None = None, bins: int = 3,
                   within: xr.Dataset | None = None, bin_per_class: bool = False) -> xr.Dataset:
    """Within-cohort and held-out accuracy per transform and classifier.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording (one rig's, or several combined along ``observable``).
    spec : IdentifySpec
        The identification settings; each row replaces its ``transform``, the within columns
        its ``group_by`` (``subject``, ``population``). The held-out columns keep
        ``group_by`` for their inner cross-validation.
    transforms : list, optional
        Transform settings to compare, each a transform name or a list of them (together);
        default ``[spec.transform]``.
    factors : sequence of str
        The held-out factors (default architecture and task); one with fewer than 2 levels
        among usable subjects has no column, and a note says so. A real-valued factor
        (``learning_rate``) is held out by ``bins`` quantile bins, as in ``generalize``.
    progress : bool
    n_jobs : int, optional
        Worker processes, as for identify.
    within : xarray.Dataset, optional
        identify's results already computed with ``spec`` (its transform and grouping are
        reused instead of computed again).
    bin_per_class : bool
        Bin a real-valued factor within each class (each rule's own low, middle and high
        rates held out in turn), as in ``generalize``.

    Returns
    -------
    xarray.Dataset
        ``transfer_accuracy`` (transfer_transform, classifier, feature_set, evaluation) and its
        subject bootstrap ``transfer_boot_ci`` (..., bound); ``transfer_n_test`` (sites
        tested); evaluations ``within`` (subject-grouped splits, mean over splits),
        ``within_population`` and ``held_out_<factor>`` (pooled over the held-out levels).
        ``transfer_notes`` (attrs): factors without a column, cells that could not be computed.

    Examples
    --------
    >>> table = transfer_table(recording, IdentifySpec(classifiers=["random_forest"]), ["raw", "diff"])  # doctest: +SKIP
    >>> print(format_transfer(table))                                                                # doctest: +SKIP
    """
    # imported here, not at the top: importing this module (from controls, which registers
    # identify) must not register generalization first, as registries list in import order
    from simlab.analysis.generalization import generalization

    transforms = [spec.transform] if transforms is None else list(transforms)
    if not transforms:
        raise SimlabError("transfer table: give at least one transform")
    base = {**spec.model_dump(), "matched_control": False, "report_transfer": False, "importance": False}
    kept, notes = _held_out_factors(ds, spec, factors)
    evaluations = [*WITHIN, *(f"held_out_{f}" for f in kept)]
    cells: dict = {}  # (transform name, evaluation) -> (accuracy, boot, n_test) DataArrays
    names, chance = [], np.nan
    for transform in transforms:
        row = IdentifySpec(**{**base, "transform": transform})
        name = _name(row.transform)
        if name in names:
            raise SimlabError(f"transfer table: transform {name} listed twice")
        names.append(name)
        for evaluation, group_by in zip(WITHIN, ("subject", "population")):
            cell_spec = IdentifySpec(**{**row.model_dump(), "group_by": group_by})
            reuse = (within is not None and within.attrs.get("group_by") == group_by
                     and within.attrs.get("transform") == ",".join(cell_spec.transforms))
            try:
                res = within if reuse else identify(ds, cell_spec, progress=progress, n_jobs=n_jobs)
            except SimlabError as exc:
                notes.append(f"{name} {evaluation}: {exc}")
                continue
            n_test = res["n_test"].sum("split")
            chance = float(res.attrs["chance"])
            cells[name, evaluation] = (res["accuracy_mean"], res["accuracy_mean_boot_ci"], n_test)
        for factor in kept:
            try:
                res = generalization(ds, factor, row, matrix=False, progress=progress, n_jobs=n_jobs, bins=bins,
                                     bin_per_class=bin_per_class)
            except SimlabError as exc:
                notes.append(f"{name} held-out {factor}: {exc}")
                continue
            n_test = res["n_test"].sum("level")
            cells[name, f"held_out_{factor}"] = (res["correct"].sum("level") / n_test,
                                                 res["accuracy_mean_boot_ci"], n_test)
    if not cells:
        raise SimlabError("transfer table: no cell could be computed; " + "; ".join(notes))
    return _dataset(cells, names, evaluations, spec, notes, kept, chance)


def _dataset(cells, names, evaluations, spec, notes, factors, chance) -> xr.Dataset:
    first = next(iter(cells.values()))[0]
    classifiers = [str(c) for c in first["classifier"].values]
    feature_sets = []
    for acc, _, _ in cells.values():
        feature_sets += [str(f) for f in acc["feature_set"].values if str(f) not in feature_sets]
    shape = (len(names), len(classifiers), len(feature_sets), len(evaluations))
    acc = np.full(shape, np.nan)
    boot = np.full(shape + (2,), np.nan)
    n_test = np.zeros(shape[:1] + shape[2:], np.int64)
    for (name, evaluation), (a, b, n) in cells.items():
        t, e = names.index(name), evaluations.index(evaluation)
        a = a.reindex(classifier=classifiers, feature_set=feature_sets)
        b = b.reindex(classifier=classifiers, feature_set=feature_sets)
        acc[t, :, :, e] = a.transpose("classifier", "feature_set").values
        boot[t, :, :, e] = b.transpose("classifier", "feature_set", "bound").values
        n_test[t, :, e] = n.isel(classifier=0).reindex(feature_set=feature_sets, fill_value=0).values
    dims = ("transfer_transform", "classifier", "feature_set", "evaluation")
    return xr.Dataset(
        {
            "transfer_accuracy": (dims, acc, {
                "long_name": "test accuracy: within, mean over subject-grouped splits; within_population, over "
                "population-grouped splits; held_out_<factor>, pooled over every held-out level", "units": "1"}),
            "transfer_boot_ci": (dims + ("bound",), boot, {
                "long_name": "subject bootstrap 95% interval over the test predictions pooled across splits or levels"}),
            "transfer_n_test": (("transfer_transform", "feature_set", "evaluation"), n_test, {
                "long_name": "test predictions, summed over splits or held-out levels"}),
        },
        coords={
            "transfer_transform": np.array(names, dtype=str),
            "classifier": np.array(classifiers, dtype=str),
            "feature_set": np.array(feature_sets, dtype=str),
            "evaluation": np.array(evaluations, dtype=str),
            "bound": np.array(["lower", "upper"], dtype=str),
        },
        attrs={
            "schema": SCHEMA,
            "title": f"transfer of {spec.target} identification",
            "target": spec.target,
            "chance": chance,
            "transfer_factors": ",".join(factors),
            "transfer_notes": "; ".join(notes),
            "transfer_group_by": spec.group_by,
            "transfer_splits": int(spec.splits),
            "transfer_bootstrap": int(spec.bootstrap),
        },
    )


TRANSFER_ATTRS = ("transfer_factors", "transfer_notes", "transfer_group_by", "transfer_splits", "transfer_bootstrap")


def attach_transfer(results: xr.Dataset, table: xr.Dataset) -> xr.Dataset:
    """identify's results with the transfer table's variables and settings added."""
    table = table.reindex(classifier=results["classifier"].values, feature_set=results["feature_set"].values)
    out = results.assign({name: table[name].drop_vars(["classifier", "feature_set", "bound"], errors="ignore")
                          for name in table.data_vars})
    out.attrs.update({k: table.attrs[k] for k in TRANSFER_ATTRS})
    return out


def format_transfer(results: xr.Dataset) -> str:
    """Rows transform x classifier, columns within (subject-, population-grouped) and held out
    per factor: accuracy (subject bootstrap 95%); one block per feature set (the last of
    many)."""
    a = results.attrs
    chance = float(a.get("chance", np.nan))
    sets = [str(f) for f in results["feature_set"].values]
    evaluations = [str(e) for e in results["evaluation"].values]
    heads = {"within": "within (subject)", "within_population": "within (population)"}
    cols = [heads.get(e, e.replace("held_out_", "held-out ")) for e in evaluations]
    transforms = [str(t) for t in results["transfer_transform"].values]
    classifiers = [str(c) for c in results["classifier"].values]
    lines = [f"transfer of {a.get('target')} identification: accuracy (subject bootstrap 95%)"
             + (f", chance {chance:.3f}" if np.isfinite(chance) else ""),
             "  within: mean over splits grouped by subject / by population; held-out <factor>: every level "
             "tested after training on the others, pooled over levels"]
    first = max(len("transform"), *(len(t) for t in transforms))
    second = max(len("classifier"), *(len(c) for c in classifiers))
    for f in sets if len(sets) <= 4 else sets[-1:]:
        body = []
        for t in transforms:
            for c in classifiers:
                cell = results.sel(transfer_transform=t, classifier=c, feature_set=f)
                texts = []
                for e in evaluations:
                    value = float(cell["transfer_accuracy"].sel(evaluation=e))
                    ci = cell["transfer_boot_ci"].sel(evaluation=e).values
                    texts.append("-" if np.isnan(value) else f"{value:.3f}"
                                 + (f" ({ci[0]:.2f}, {ci[1]:.2f})" if np.isfinite(ci).all() else ""))
                body.append((t, c, texts))
        widths = [max(len(h), *(len(b[2][i]) for b in body)) for i, h in enumerate(cols)]
        lines += ["", f"  feature set {f}:",
                  "  " + f"{'transform':<{first}}  {'classifier':<{second}}  "
                  + "  ".join(f"{h:>{w}}" for h, w in zip(cols, widths))]
        for t, c, texts in body:
            lines.append("  " + f"{t:<{first}}  {c:<{second}}  " + "  ".join(f"{x:>{w}}" for x, w in zip(texts, widths)))
    if a.get("transfer_notes"):
        lines.append("  notes: " + str(a["transfer_notes"]))
    return "\n".join(lines)
