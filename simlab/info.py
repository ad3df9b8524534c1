"""``simlab info``: a readable summary of a run directory or of a NetCDF file simlab wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from simlab.errors import SimlabError
from simlab.specs.analyses import HealthSpec


def describe_path(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        return describe_run(path)
    if not path.exists():
        raise SimlabError(f"{path}: no such file or directory")
    try:
        dataset = xr.open_dataset(path).load()
    except Exception:  # any unreadable file is the user's to fix, not a crash
        raise SimlabError(f"{path}: not a NetCDF file simlab can read") from None
    return describe_dataset(dataset, str(path))


def describe_dataset(dataset: xr.Dataset, label: str = "") -> str:
    """The summary of anything simlab writes (a recording, a subject table, an analysis result),
    headed by ``label`` (its file); a SimlabError for other datasets."""
    where = f"{label}: " if label else ""
    schema = str(dataset.attrs.get("schema", ""))
    if schema.startswith("simlab.recording"):
        return describe_recording(label or "recording", dataset)
    from simlab.analysis.analyses import format_result

    table = format_result(dataset)
    if table is not None:
        return f"{where}{dataset.attrs.get('title', 'analysis results')}\n" + table
    if "accuracy_mean" in dataset:
        from simlab.analysis.controls import format_identify

        return f"{where}identification results\n" + format_identify(dataset)
    if schema.startswith("simlab.predict"):
        from simlab.analysis.identifier import format_predictions

        return f"{where}{dataset.attrs.get('title', 'predictions')}\n" + format_predictions(dataset)
    if schema.startswith("simlab.matched"):
        from simlab.analysis.matched import format_matched

        return f"{where}{dataset.attrs.get('title', 'matched control')}\n" + format_matched(dataset)
    if schema.startswith("simlab.transfer"):
        from simlab.analysis.transfer import format_transfer

        return f"{where}{dataset.attrs.get('title', 'transfer table')}\n" + format_transfer(dataset)
    if schema.startswith("simlab.importance"):
        from simlab.analysis.importance import format_importance

        return f"{where}feature importance\n" + format_importance(dataset)
    if "test_accuracy" in dataset:
        return f"{where}subject table\n" + describe_subjects(dataset)
    raise SimlabError(f"{label or 'dataset'}: not a recording, subject table or analysis result of simlab")


def describe_recording(path: Path, ds: xr.Dataset) -> str:
    from simlab.recording.contract import problems

    obs = ds["observation"]
    lines = [
        f"{path}: {ds.attrs.get('title', 'recording')}",
        f"  schema {ds.attrs.get('schema')}, simlab {ds.attrs.get('simlab_version')}, created {ds.attrs.get('created')}",
        f"  {ds.sizes['subject']} subjects x {ds.sizes['layer']} layers x {ds.sizes['session']} sessions "
        f"x {ds.sizes['observable']} observables",
        f"  sessions at steps {', '.join(str(s) for s in ds['step'].values[:6])}"
        + (" ..." if ds.sizes["session"] > 6 else ""),
    ]
    for measure in np.unique(ds["measure"].values.astype(str)):
        count = int((ds["measure"].values.astype(str) == measure).sum())
        lines.append(f"  {measure}: {count} observables")
    for factor in ("learning_rule", "architecture", "task", "batch_size"):
        values, counts = np.unique(ds[factor].values, return_counts=True)
        lines.append(f"  {factor}: " + ", ".join(f"{v} ({c})" for v, c in zip(values, counts)))
    diverged = int((ds["status"].values.astype(str) == "diverged").sum())
    lines.append(f"  diverged subjects: {diverged}")
    finite = np.isfinite(obs.values).mean()
    lines.append(f"  finite values: {finite:.1%} (NaN: padding layers, undefined statistics, diverged subjects)")
    extra = [name for name in ds.data_vars if name != "observation"]
    if extra:
        lines.append("  unit traces: " + ", ".join(f"{name} {dict(ds[name].sizes)}" for name in extra))
    lines.append("  rig:")
    lines.extend("    " + line for line in str(ds.attrs.get("rig", "")).splitlines())
    found = problems(ds)
    lines.append("  contract: conforms" if not found else "  contract problems:\n    " + "\n    ".join(found))
    return "\n".join(lines)


def describe_subjects(table: xr.Dataset) -> str:
    # alignment diagnostics (feedback rules): mean over layers at the final session, degrees
    angles = [name for name in ("feedback_angle", "gradient_angle") if name in table]
    header = "".join(f" {name.replace('_angle', ' ang'):>12s}" for name in angles)
    lines = [f"  {'subject':<44s} {'final acc':>9s}{header}  status"]
    for subject in table["subject"].values:
        row = table.sel(subject=subject)
        cells = ""
        for name in angles:
            final = row[name].isel(session=-1).values
            cells += f" {np.nanmean(final):12.1f}" if np.isfinite(final).any() else f" {'-':>12s}"
        lines.append(f"  {subject:<44s} {float(row['final_accuracy']):9.3f}{cells}  {row['status'].item()}")
    if "health_metric" in table.coords:
        probed = table["subject"].values[table["health_metric"].values.astype(str) == "probe_accuracy"]
        if len(probed):
            lines.append(f"  (final acc of the {len(probed)} self-supervised subject(s): linear-probe accuracy)")
    if angles:
        lines.append("  (feedback ang: angle of B to W; gradient ang: of the rule's gradient to backprop's;")
        lines.append("   degrees, mean over layers at the final session; - for backprop rules)")
    return "\n".join(lines)


def health_table(table: xr.Dataset, health: HealthSpec = HealthSpec()) -> str:
    """A Markdown table of learning health: learning rules x architecture / task pairs, each
    cell the mean final accuracy over replicates (linear-probe accuracy for self-supervised
    tasks, marked *), with the diverged count where any and the count of subjects that did not
    learn by ``health.margin`` (:func:`simlab.analysis.health.learned`, the definition the
    analyses use), and an *untrained* line with the same metric at step 0 (mean over the
    pair's subjects) when the run recorded a session there. Rules are the rows unless there
    are more pairs than rules (a zoo): then pairs are."""
    from simlab.analysis.health import learned

    rules = list(dict.fromkeys(table["learning_rule"].values.astype(str)))
    pairs = list(dict.fromkeys(zip(table["architecture"].values.astype(str), table["task"].values.astype(str))))
    probed = set()
    if "health_metric" in table.coords:
        probed = {str(t) for t, m in zip(table["task"].values, table["health_metric"].values) if str(m) == "probe_accuracy"}
    rule_of, arch_of, task_of = (table[c].values.astype(str) for c in ("learning_rule", "architecture", "task"))
    status = table["status"].values.astype(str)
    accuracy = table["final_accuracy"].values.astype(float)
    did_learn = learned(table, health.margin)
    unhealthy = np.zeros(len(status), bool) if did_learn is None else (status == "ok") & ~did_learn

    def cell(rule: str, architecture: str, task: str) -> str:
        chosen = (rule_of == rule) & (arch_of == architecture) & (task_of == task)
        if not chosen.any():
            return ""
        ok = chosen & (status == "ok")
        counts = [f"{n} {what}" for n, what in ((int((chosen & (status != "ok")).sum()), "diverged"),
                                                 (int((chosen & unhealthy).sum()), "did not learn")) if n]
        return (f"{np.mean(accuracy[ok]):.2f}" if ok.any() else "-") + (f" ({', '.join(counts)})" if counts else "")

    pair_names = [f"{a} / {t}{' *' if t in probed else ''}" for a, t in pairs]
    grid = {rule: [cell(rule, a, t) for a, t in pairs] for rule in rules}
    if "session_step" in table.coords and int(table["session_step"].values[0]) == 0:
        # the same metric before any learning: what a rule must beat (a probe of random features
        # is far above chance)
        untrained = table["test_accuracy"].values[:, 0].astype(float)
        grid["*untrained (step 0)*"] = [f"{np.mean(untrained[(arch_of == a) & (task_of == t)]):.2f}" for a, t in pairs]
    if len(pairs) > len(rules):
        corner, columns = "architecture / task", list(grid)
        rows = [(name, [grid[column][k] for column in columns]) for k, name in enumerate(pair_names)]
    else:
        corner, columns = "rule", pair_names
        rows = list(grid.items())
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    notes = []
    if unhealthy.any():
        notes.append(f"did not learn: not diverged, final accuracy less than {health.margin:g} above the same "
                     "subject's untrained value (step 0); the analyses "
                     + (f"exclude them (health min_gain {health.margin:g})" if health.excludes
                        else "report them, and exclude them with health min_gain"))
    if probed:
        notes.append("\\* self-supervised task: linear-probe accuracy on the frozen representation")
    for note in notes:
        lines += ["", note]
    return "\n".join(lines)


def describe_run(path: Path) -> str:
    from simlab.protocol import plan_cohort
    from simlab.rundir import RunDirectory
    from simlab.pipeline import training_summary

    run = RunDirectory.existing(path)
    protocol = run.protocol
    plan = plan_cohort(protocol)
    trained = sum(run.shard(pop.id).exists() for pop in plan.populations)
    lines = [
        f"{path}: run of protocol {protocol.name!r}",
        f"  {len(plan)} subjects in {len(plan.populations)} populations; {trained} populations trained",
        f"  {protocol.training.steps} steps, {protocol.recording.sessions} sessions, "
        f"{protocol.recording.stimuli} stimuli",
    ]
    if run.subjects_file.exists():
        lines.append(training_summary(run))
    recordings = list(run.recording_files().values())
    lines.append("  recordings: " + (", ".join(p.name for p in recordings) if recordings else "none"))
    analyses = list(run.analysis_files("txt").values())
    for analysis in analyses:
        lines.append(f"  analysis {analysis.stem}:")
        lines.extend("    " + line for line in analysis.read_text().splitlines())
    return "\n".join(lines)
