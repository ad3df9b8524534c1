"""The analysis subcommands of ``simlab``: generalize, trajectory, robustness, confound, plan,
figures and report.

Each reads a run directory. Its settings start from the protocol's ``analyses:`` entry of the
same analysis (or the defaults) and the flags override them, so a command reproduces what
``simlab run`` wrote unless told otherwise (:meth:`simlab.Run.analyze`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from simlab.cli import options
from simlab.specs.analyses import (
    DEFAULT_MARGIN,
    TRANSFORMS,
    ConfoundSpec,
    GeneralizationSpec,
    IdentifySpec,
    RobustnessSpec,
)

__all__ = ["ANALYSIS_COMMANDS", "add_analysis_commands", "add_identify_options"]

default = options.default


def _run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory made by 'simlab run'")


def add_identify_options(parser: argparse.ArgumentParser, analysis: bool = True, rigs: bool = True) -> None:
    """Identification settings (IdentifySpec's fields) that identify and every analysis share;
    for an analysis they override the protocol's entry of that analysis."""
    title = ("identification (defaults: the protocol's analyses entry, else these)" if analysis
             else "identification")
    group = parser.add_argument_group(title)
    group.add_argument("--splits", type=int, help=f"number of train/test splits (default {default(IdentifySpec, 'splits')})")
    group.add_argument("--classifier", dest="classifiers", action="append", metavar="NAME[:KEY=VALUE,...]",
                       help="repeatable; linear_svm, random_forest, conv1d, an sklearn alias (logistic_regression, "
                       "knn, extra_trees, gradient_boosting, rbf_svm, lda, naive_bayes, mlp) or an import path "
                       "(sklearn.ensemble.ExtraTreesClassifier), optionally with fixed parameters, e.g. "
                       "'logistic_regression:C=0.1,max_iter=500' "
                       f"(default: {default(IdentifySpec, 'classifiers').replace(' ', ' and ')})")
    group.add_argument("--preset", choices=["fast", "reference"], help="hyperparameter grids: fast (small) or "
                       f"the reference's full grids (slow) (default {default(IdentifySpec, 'preset')})")
    group.add_argument("--target", help="subject coordinate to predict, e.g. learning_rule, credit_mechanism, "
                       f"optimizer, task_family, architecture (default {default(IdentifySpec, 'target')})")
    group.add_argument("--seed", type=int, help=f"seed of the splits and classifiers (default {default(IdentifySpec, 'seed')})")
    group.add_argument("--min-gain", dest="health", type=options.min_gain, metavar="G",
                       help="leave out, before any split, subjects whose final accuracy (or probe accuracy) is less "
                       "than G above their own untrained value; the count excluded per rule is printed (default: "
                       f"exclude none, report who learned by {DEFAULT_MARGIN:g})")
    group.add_argument("--transform", nargs="+", choices=list(TRANSFORMS), metavar="TRANSFORM",
                       help="what of each site's observable trajectories the classifiers see: "
                       f"{', '.join(TRANSFORMS)}; several concatenate (--transform raw diff) "
                       f"(default {default(IdentifySpec, 'transform')})")
    group.add_argument("--group-by", choices=["subject", "population", "layer"],
                       help="keep each subject on one side of a split, each population (replicates that differ "
                       "only by seed), or split over layers as the reference "
                       f"(default {default(IdentifySpec, 'group_by')})")
    group.add_argument("--bootstrap", type=int, metavar="N", help="resamples of the test subjects for the subject "
                       f"bootstrap intervals; 0: none (default {default(IdentifySpec, 'bootstrap')})")
    if analysis and rigs:
        group.add_argument("--rigs", nargs="+", metavar="RIG", help="use the recordings of these rigs of the "
                           "protocol (default: all of them, combined)")
    if analysis:
        parser.add_argument("--force", action="store_true", help="recompute and overwrite existing results")
        parser.add_argument("--quiet", action="store_true", help="no progress bars or tables")
        return
    group.add_argument("--features", choices=["measures", "observables", "both"],
                       help="feature sets: one per measure and all together, one per observable, or both "
                       f"(default {default(IdentifySpec, 'features')})")
    group.add_argument("--importance", action="store_true", default=None,
                       help="also compute impurity and permutation feature importance (<out>.importance.nc)")
    group.add_argument("--matched-control", action="store_true", default=None,
                       help="also identify each pair of classes on subjects matched one-to-one on learning_rate "
                       "(same architecture, task and batch size), beside the learning rate alone on the same "
                       "splits; printed after the table and stored in the results")
    group.add_argument("--matched-caliper", type=float, metavar="RATIO",
                       help="largest ratio of the learning rates of a matched pair "
                       f"(default {default(IdentifySpec, 'matched_caliper')})")
    group.add_argument("--report-transfer", nargs="*", type=_transfer_entry, action=_TransferAction,
                       metavar="TRANSFORM[+TRANSFORM]",
                       help="also report within-cohort (subject- and population-grouped), held-out architecture "
                       "and held-out task accuracy for each classifier and each transform given (a+b: together; "
                       "none given: --transform's), with subject bootstrap intervals")


def _transfer_entry(text: str):
    """One transform setting of --report-transfer: a name, or names joined by '+'."""
    names = text.split("+")
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown transform {', '.join(unknown)}; expected {', '.join(TRANSFORMS)} "
                                         "or several joined by +")
    return names[0] if len(names) == 1 else names


class _TransferAction(argparse.Action):
    """--report-transfer alone: True (the identify transform); with values: those transforms."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(values) if values else True)


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
    gen.add_argument("--factor", dest="factors", action="append", help="repeatable; a subject coordinate such as architecture, "
                     "task, batch_size or learning_rate (binned) (default: the protocol's, else architecture)")
    gen.add_argument("--no-matrix", dest="matrix", action="store_false", default=None,
                     help="skip the train-level x test-level matrix")
    gen.add_argument("--bins", type=int, help="a real-valued factor (learning_rate) with more distinct values is "
                     "held out by this many quantile bins of its log value "
                     f"(default {default(GeneralizationSpec, 'bins')})")
    gen.add_argument("--bin-per-class", action="store_true", default=None,
                     help="bin each rule's subjects by its own quantiles, so every held-out band holds every rule")
    add_identify_options(gen)

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
    add_identify_options(traj)

    rob = commands.add_parser(
        "robustness", help="identification over a grid of units x noise, re-recording the snapshots",
        formatter_class=fmt,
        description="Re-record the run's snapshots (never retraining) with each rig at every unit count and "
        "noise level of the grid (cached in RUN_DIR/recordings/robustness/), identify each, sweep the number "
        "of sessions at all units and no noise, and compare the first two rigs cell by cell (paired t-test "
        "over splits, Holm-corrected). Writes RUN_DIR/analyses/robustness.nc and .txt.",
    )
    _run_dir(rob)
    rob.add_argument("--rig", action="append", dest="rigs", metavar="RIG",
                     help="repeatable; a rig of the protocol or a rig type "
                     f"(default {default(RobustnessSpec, 'rigs').replace(' ', ' and ')})")
    rob.add_argument("--units", nargs="+", type=options.units, help="unit settings: counts, fractions or all "
                     f"(default {default(RobustnessSpec, 'units')})")
    rob.add_argument("--noise", nargs="+", type=float, help="noise levels (sd of the rig's noise model) "
                     f"(default {default(RobustnessSpec, 'noise')})")
    rob.add_argument("--sessions", nargs="*", type=int, help="session counts to sweep (none: no sweep) "
                     f"(default {default(RobustnessSpec, 'sessions')})")
    rob.add_argument("--rig-seed", type=int, help="one seed for every rig (default: each rig's own)")
    add_identify_options(rob, rigs=False)

    conf = commands.add_parser(
        "confound", help="identification among performance-matched subjects, and from performance alone",
        formatter_class=fmt,
        description="Answer the performance confound: identify among subjects matched on final test accuracy "
        "(nearest neighbours within a caliper, or quantile bins), and name the class from the loss and "
        "test-accuracy curves alone. Writes RUN_DIR/analyses/confound.nc and .txt.",
    )
    _run_dir(conf)
    conf.add_argument("--matching", choices=["nearest", "bins"], help="nearest: groups of one subject per class "
                      "within --caliper; bins: --bins quantile bins with equally many subjects per class "
                      f"(default {default(ConfoundSpec, 'matching')})")
    conf.add_argument("--caliper", type=float, help="largest final-accuracy difference in a nearest group "
                      f"(default {default(ConfoundSpec, 'caliper')})")
    conf.add_argument("--bins", type=int, help=f"quantile bins of final accuracy (default {default(ConfoundSpec, 'bins')})")
    conf.add_argument("--curve-points", type=int, help="points each training curve is resampled to "
                      f"(default {default(ConfoundSpec, 'curve_points')})")
    add_identify_options(conf)

    plan = commands.add_parser(
        "plan", help="the fewest units and sessions and the most noise that still identify the rule",
        formatter_class=fmt,
        description="From the robustness grid of a run (computed first if RUN_DIR/analyses/robustness.nc is "
        "missing), the fewest units, the most noise and the fewest sessions at which each rig still "
        "identifies the target at the given accuracy. A setting counts when the lower bound of its "
        "accuracy (--criterion) reaches the target, and so does every easier setting on its axis.",
    )
    _run_dir(plan)
    plan.add_argument("--target", type=float, default=0.9, help="accuracy to reach (default %(default)s)")
    plan.add_argument("--rig", action="append", dest="rigs", metavar="RIG", help="repeatable; rigs of the grid "
                      "(default: all)")
    plan.add_argument("--classifier", help="classifier of the grid (default: per rig, the best on average)")
    plan.add_argument("--criterion", choices=["wilson", "bootstrap", "split", "mean"], default="wilson",
                      help="wilson: lower 95%% Wilson bound, n = test sites of one split (default); bootstrap: lower "
                      "95%% subject bootstrap bound (tested subjects resampled); split: lower 95%% t bound of the "
                      "mean over splits; mean: the point estimate")
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


def _analyze(args, name: str, settings: dict) -> int:
    import simlab

    run = simlab.open_run(args.run_dir)
    settings = {**{k: v for k, v in settings.items() if v is not None}, **options.given(args, options.IDENTIFY_SETTINGS)}
    echo = (lambda *a, **k: None) if args.quiet else print
    for path in run.analyze(name, force=args.force, progress=not args.quiet, echo=echo, **settings):
        print(f"wrote {path}")
    return 0


def cmd_generalize(args) -> int:
    return _analyze(args, "generalization", {"factors": args.factors, "rigs": args.rigs, "matrix": args.matrix,
                                             "bins": args.bins, "bin_per_class": args.bin_per_class})


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
    return _analyze(args, "robustness", {"rigs": args.rigs, "units": args.units, "noise": args.noise,
                                         "sessions": args.sessions, "seed": args.rig_seed})


def cmd_confound(args) -> int:
    return _analyze(args, "confound", {"matching": args.matching, "caliper": args.caliper, "bins": args.bins,
                                       "curve_points": args.curve_points, "rigs": args.rigs})


def cmd_plan(args) -> int:
    import simlab
    from simlab.analysis.plan import format_plan

    run = simlab.open_run(args.run_dir)
    if not run.analysis("robustness", "nc").exists():
        print(f"{run.analysis('robustness', 'nc')} missing: computing the robustness grid first")
        run.analyze("robustness", progress=not args.quiet, echo=lambda *a, **k: None)
    grid = run.analyses["robustness"]
    plans = simlab.plan(grid, args.target, rigs=args.rigs, classifier=args.classifier, criterion=args.criterion)
    print(format_plan(plans, args.target, args.criterion, grid))
    return 0


def cmd_figures(args) -> int:
    from simlab.analysis.figures import draw_run_figures
    from simlab.api import open_run

    for figure in draw_run_figures(open_run(args.run_dir), observables=args.observable):
        print(f"wrote {figure.png}, {figure.svg.name} and {figure.pdf.name}")
    return 0


def cmd_report(args) -> int:
    from simlab.analysis.report import write_report
    from simlab.api import open_run

    out = write_report(open_run(args.run_dir), args.out, observables=args.observable)
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
