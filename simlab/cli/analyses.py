"""The analysis subcommands of ``simlab``: generalize, trajectory, robustness, confound, plan,
figures and report.

Each reads a run directory. Its settings start from the protocol's ``analyses:`` entry of the
same analysis (or the defaults) and the flags override them, so a command reproduces what
``simlab run`` wrote unless told otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import BaseModel, ValidationError

from simlab.cli import options
from simlab.errors import SimlabError

__all__ = ["ANALYSIS_COMMANDS", "add_analysis_commands"]






def _run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory made by 'simlab run'")


def _common(parser: argparse.ArgumentParser, rigs: bool = True) -> None:
    """Identification settings every analysis shares (they override the protocol's)."""
    group = parser.add_argument_group("identification (defaults: the protocol's analyses entry, else identify's)")
    group.add_argument("--splits", type=int, help="number of train/test splits")
    group.add_argument("--classifier", action="append", metavar="NAME[:KEY=VALUE,...]",
                       help="repeatable; as for 'simlab identify' (default: random_forest and linear_svm)")
    group.add_argument("--preset", choices=["fast", "reference"], help="hyperparameter grids")
    group.add_argument("--target", help="subject coordinate to predict (default learning_rule)")
    group.add_argument("--seed", type=int, help="seed of the splits and classifiers")
    if rigs:
        group.add_argument("--rigs", nargs="+", metavar="RIG", help="use the recordings of these rigs of the protocol "
                           "(default: all of them, combined)")
    parser.add_argument("--force", action="store_true", help="recompute and overwrite existing results")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or tables")


def add_analysis_commands(commands) -> None:
    """Add the analysis subcommands to ``simlab``'s subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    gen = commands.add_parser(
        "generalize", help="identify on held-out levels of a factor (leave one level out)", formatter_class=fmt,
        description="Train on every level but one of a subject factor (architecture, task, batch_size, a rule "
        "hyperparameter coordinate) and test on the held-out level, for every level. Also trains on each "
        "single level and tests on each other one (the generalization matrix). Writes "
        "RUN_DIR/analyses/generalization-<factor>.nc and .txt.",
    )
    _run_dir(gen)
    gen.add_argument("--factor", action="append", help="repeatable; a subject coordinate (default: the protocol's, "
                     "else architecture)")
    gen.add_argument("--no-matrix", action="store_true", help="skip the train-level x test-level matrix")
    _common(gen)

    traj = commands.add_parser(
        "trajectory", help="identify from part of the training trajectory", formatter_class=fmt,
        description="Identify from only some sessions of the recordings: the first or last fraction of "
        "training, every k-th session, or a number of evenly spaced sessions; compared with all sessions. "
        "Each flag is repeatable and adds one access pattern; with none, the protocol's (or the default) "
        "patterns. Writes RUN_DIR/analyses/trajectory.nc and .txt.",
    )
    _run_dir(traj)
    traj.add_argument("--first", type=options.fraction, action="append", metavar="F", help="only the first fraction F of training")
    traj.add_argument("--last", type=options.fraction, action="append", metavar="F", help="only the last fraction F of training")
    traj.add_argument("--every", type=int, action="append", metavar="K", help="every K-th session")
    traj.add_argument("--sessions", type=int, action="append", metavar="N", help="N sessions evenly spaced in training")
    _common(traj)

    rob = commands.add_parser(
        "robustness", help="identification over a grid of units x noise, re-recording the snapshots",
        formatter_class=fmt,
        description="Re-record the run's snapshots (never retraining) with each rig at every unit count and "
        "noise level of the grid (cached in RUN_DIR/recordings/robustness/), identify each, sweep the number "
        "of sessions at all units and no noise, and compare the first two rigs cell by cell (paired t-test "
        "over splits, Holm-corrected). Writes RUN_DIR/analyses/robustness.nc and .txt.",
    )
    _run_dir(rob)
    rob.add_argument("--rig", action="append", dest="grid_rigs", metavar="RIG",
                     help="repeatable; a rig of the protocol or a rig type (default synapse and electrophysiology)")
    rob.add_argument("--units", nargs="+", type=options.units, help="unit settings: counts, fractions or all")
    rob.add_argument("--noise", nargs="+", type=float, help="noise levels (sd of the rig's noise model)")
    rob.add_argument("--sessions", nargs="*", type=int, help="session counts to sweep (none: no sweep)")
    rob.add_argument("--rig-seed", type=int, help="one seed for every rig (default: each rig's own)")
    _common(rob, rigs=False)

    conf = commands.add_parser(
        "confound", help="identification among performance-matched subjects, and from performance alone",
        formatter_class=fmt,
        description="Answer the performance confound: identify among subjects matched on final test accuracy "
        "(nearest neighbours within a caliper, or quantile bins), and name the class from the loss and "
        "test-accuracy curves alone. Writes RUN_DIR/analyses/confound.nc and .txt.",
    )
    _run_dir(conf)
    conf.add_argument("--matching", choices=["nearest", "bins"], help="nearest: groups of one subject per class "
                      "within --caliper (default); bins: --bins quantile bins with equally many subjects per class")
    conf.add_argument("--caliper", type=float, help="largest final-accuracy difference in a nearest group (default 0.05)")
    conf.add_argument("--bins", type=int, help="quantile bins of final accuracy (default 3)")
    conf.add_argument("--curve-points", type=int, help="points each training curve is resampled to (default 20)")
    _common(conf)

    plan = commands.add_parser(
        "plan", help="the fewest units and sessions and the most noise that still identify the rule",
        formatter_class=fmt,
        description="From the robustness grid of a run (computed first if RUN_DIR/analyses/robustness.nc is "
        "missing), the fewest units, the most noise and the fewest sessions at which each rig still "
        "identifies the target at the given accuracy. A setting counts when the lower bound of its "
        "accuracy (--criterion) reaches the target, and so does every easier setting on its axis.",
    )
    _run_dir(plan)
    plan.add_argument("--target", type=float, default=0.9, help="accuracy to reach (default 0.9)")
    plan.add_argument("--rig", action="append", dest="plan_rigs", metavar="RIG", help="repeatable; rigs of the grid "
                      "(default: all)")
    plan.add_argument("--classifier", help="classifier of the grid (default: per rig, the best on average)")
    plan.add_argument("--criterion", choices=["wilson", "split", "mean"], default="wilson",
                      help="wilson: lower 95%% Wilson bound, n = test sites of one split (default); split: lower "
                      "95%% t bound of the mean over splits; mean: the point estimate")
    plan.add_argument("--quiet", action="store_true", help="no progress bars while computing a missing grid")

    figs = commands.add_parser(
        "figures", help="draw the figures of a run's analyses (PNG, SVG and PDF)",
        description="Draw every figure the run's results allow into RUN_DIR/figures/ (PNG, SVG and PDF): "
        "observable trajectories by rule, confusion matrices, accuracy vs units and noise, feature "
        "importance, generalization matrices, trajectory access and the performance confound.",
    )
    _run_dir(figs)
    figs.add_argument("--observable", action="append", help="repeatable; observables for the trajectory figure "
                      "(default: a few medians and norms)")

    rep = commands.add_parser(
        "report", help="one self-contained HTML page with every figure and table of a run",
        description="Draw the figures (as 'simlab figures') and write one HTML page with them embedded and "
        "every analysis table, readable offline: RUN_DIR/report.html unless --out.",
    )
    _run_dir(rep)
    rep.add_argument("--out", type=Path, help="HTML file (default RUN_DIR/report.html)")
    rep.add_argument("--observable", action="append", help="repeatable; observables for the trajectory figure")


def _spec(run, name: str, overrides: dict, identify_overrides: dict, flags: dict) -> BaseModel:
    """The protocol's spec of analysis ``name`` (or its defaults) with flag overrides applied."""
    from simlab.specs.analyses import ANALYSES

    base = run.protocol().analyses.get(name)
    data = base.model_dump() if base is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    identify = dict(data.get("identify") or {})
    identify.update({k: v for k, v in identify_overrides.items() if v is not None})
    data["identify"] = identify
    try:
        return ANALYSES[name](**data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            key = loc[-1] if loc and loc[0] == "identify" and len(loc) > 1 else (loc[0] if loc else name)
            problems.append(f"{flags.get(key, '.'.join(loc))}: {e['msg'].removeprefix('Value error, ')}")
        raise SimlabError("; ".join(problems)) from None


def _identify_overrides(args) -> dict:
    return {
        "splits": args.splits, "preset": args.preset, "target": args.target, "seed": args.seed,
        "classifiers": [options.classifier_option(c) for c in args.classifier] if args.classifier else None,
    }


FLAGS = {"splits": "--splits", "classifiers": "--classifier", "preset": "--preset", "target": "--target",
         "seed": "--seed", "factors": "--factor", "rigs": "--rig", "units": "--units", "noise": "--noise",
         "sessions": "--sessions", "bins": "--bins", "caliper": "--caliper", "curve_points": "--curve-points", "schedules": "--first/--last"}


def _analyze(args, name: str, overrides: dict) -> int:
    from simlab.analysis.analyses import run_analysis
    from simlab.rundir import RunDirectory

    run = RunDirectory.existing(args.run_dir)
    spec = _spec(run, name, overrides, _identify_overrides(args), FLAGS)
    echo = (lambda *a, **k: None) if args.quiet else print
    paths = run_analysis(run, name, spec, force=args.force, progress=not args.quiet, echo=echo)
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_generalize(args) -> int:
    return _analyze(args, "generalization", {"factors": args.factor, "rigs": args.rigs,
                                             "matrix": False if args.no_matrix else None})


def cmd_trajectory(args) -> int:
    schedules = {}
    for f in args.first or []:
        schedules[f"first_{f:g}"] = {"window": (0.0, f)}
    for f in args.last or []:
        schedules[f"last_{f:g}"] = {"window": (1.0 - f, 1.0)}
    for k in args.every or []:
        schedules[f"every_{k}"] = {"every": k}
    for n in args.sessions or []:
        schedules[f"sessions_{n}"] = {"count": n}
    return _analyze(args, "trajectory", {"schedules": schedules or None, "rigs": args.rigs})


def cmd_robustness(args) -> int:
    overrides = {"rigs": args.grid_rigs, "units": args.units, "noise": args.noise, "sessions": args.sessions,
                 "seed": args.rig_seed}
    return _analyze(args, "robustness", overrides)


def cmd_confound(args) -> int:
    return _analyze(args, "confound", {"matching": args.matching, "caliper": args.caliper, "bins": args.bins,
                                       "curve_points": args.curve_points, "rigs": args.rigs})


def cmd_plan(args) -> int:
    from simlab.analysis.analyses import load_result, run_analysis
    from simlab.analysis.plan import format_plan, plan_design
    from simlab.rundir import RunDirectory

    run = RunDirectory.existing(args.run_dir)
    path = run.analysis("robustness", "nc")
    if not path.exists():
        print(f"{path} missing: computing the robustness grid first")
        spec = _spec(run, "robustness", {}, {}, FLAGS)
        run_analysis(run, "robustness", spec, progress=not args.quiet, echo=lambda *a, **k: None)
    grid = load_result(path)
    plans = plan_design(grid, args.target, args.plan_rigs, args.classifier, args.criterion)
    print(format_plan(plans, args.target, args.criterion, grid))
    return 0


def cmd_figures(args) -> int:
    from simlab.analysis.figures import draw_run_figures
    from simlab.rundir import RunDirectory

    run = RunDirectory.existing(args.run_dir)
    for figure in draw_run_figures(run, observables=args.observable):
        print(f"wrote {figure.png}, {figure.svg.name} and {figure.pdf.name}")
    return 0


def cmd_report(args) -> int:
    from simlab.analysis.report import write_report
    from simlab.rundir import RunDirectory

    run = RunDirectory.existing(args.run_dir)
    out = write_report(run, args.out, observables=args.observable)
    print(f"wrote {out}")
    return 0


ANALYSIS_COMMANDS = {
    "generalize": cmd_generalize,
    "trajectory": cmd_trajectory,
    "robustness": cmd_robustness,
    "confound": cmd_confound,
    "plan": cmd_plan,
    "figures": cmd_figures,
    "report": cmd_report,
}
