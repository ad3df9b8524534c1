"""The ``simlab`` command: run, record, identify, validate, info.

User mistakes (a missing file, a bad value, an existing output) end with a one-line error
(or, for a protocol, one line per problem) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from simlab._version import __version__
from simlab.cli import options
from simlab.cli.analyses import ANALYSIS_COMMANDS, add_analysis_commands
from simlab.errors import SimlabError

EPILOG = """examples:
  simlab validate protocols/quickstart.yaml
  simlab run protocols/quickstart.yaml --out runs/quickstart
  simlab record runs/quickstart --rig electrophysiology --units 20 --noise 0.5
  simlab identify runs/quickstart/recordings/synapse.nc runs/quickstart/recordings/electrophysiology.nc
  simlab info runs/quickstart
  simlab robustness runs/quickstart --units 16 64 all --noise 0 0.3 1
  simlab plan runs/quickstart --target 0.9
  simlab report runs/quickstart
"""








def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simlab",
        description="A virtual neuroscience laboratory: train cohorts of networks under known learning rules, "
        "record them with simulated rigs, and identify the learning rule from the recordings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"simlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train, record and analyze the cohort of a protocol file")
    run.add_argument("protocol", type=Path, help="protocol YAML file")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<protocol name>)")
    run.add_argument("--force", action="store_true", help="redo and overwrite existing outputs")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--cluster", metavar="local:N", help="train the populations on a local Dask cluster of N worker processes "
        "(local:N:T pins each worker to T CPUs)"
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="train the populations on a running Dask scheduler (tcp://host:8786); "
        "the workers must see the run directory"
    )

    record = commands.add_parser(
        "record", help="record a trained cohort again with a rig (no retraining)", description=(
            "Apply a rig to the snapshots of a run. --rig names a rig of the run's protocol, a rig type "
            "(synapse, electrophysiology, paired) or a rig YAML file; the flags override its settings. "
            "Every setting lands in the recording's 'rig' attribute."
        )
    )
    record.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory made by 'simlab run'")
    record.add_argument("--rig", required=True, help="rig name in the protocol, a rig type, or a rig YAML file")
    units = record.add_argument_group("units")
    units.add_argument("--units", type=options.units, help="units per site: 'all', a count, or a fraction in (0, 1]")
    units.add_argument("--sampling", choices=["chronic", "acute"], help="same units every session (chronic) or new ones (acute)")
    noise = record.add_argument_group("measurement noise")
    noise.add_argument("--noise-model", choices=["gaussian", "gain", "lognormal", "poisson"], help="noise model (default gaussian)")
    noise.add_argument("--noise", type=float, help="scale of the noise: sd of gaussian, gain and lognormal noise")
    noise.add_argument("--rate-gain", type=float, help="poisson: firing rate (Hz) per unit of activation (default 20)")
    noise.add_argument("--count-window", type=float, help="poisson: spike-counting window in seconds (default 0.5)")
    noise.add_argument("--seed", type=int, help="the rig's seed for unit sampling and noise")
    schedule = record.add_argument_group("schedule (which of the run's sessions)")
    schedule.add_argument("--sessions", type=int, help="record this many sessions")
    schedule.add_argument("--spacing", choices=["linear", "log"], help="spacing of --sessions in training steps")
    schedule.add_argument("--window", type=options.window, metavar="START:END", help="only sessions in this fraction of training")
    schedule.add_argument("--every", type=int, metavar="K", help="every k-th session")
    stimuli = record.add_argument_group("stimuli (electrophysiology and paired rigs)")
    stimuli.add_argument("--stimuli", choices=["heldout", "noise"], help="the rig's own stimulus set instead of the run's")
    stimuli.add_argument("--stimuli-size", type=int, help="size of the rig's stimulus set (default 256)")
    stimuli.add_argument("--stimuli-seed", type=int, help="seed of the rig's stimulus set")
    raw = record.add_argument_group("raw unit recordings")
    raw.add_argument("--keep-units", action="store_true", default=None, help="also store per-unit responses")
    raw.add_argument("--max-unit-bytes", type=int, help="refuse to keep unit responses larger than this (default 1 GiB)")
    record.add_argument("--out", type=Path, help="output NetCDF file (default: RUN_DIR/recordings/<rig>-<settings>.nc)")
    record.add_argument("--force", action="store_true", help="overwrite an existing output file")
    record.add_argument("--quiet", action="store_true", help="no progress bar")

    ident = commands.add_parser(
        "identify", help="identify the learning rule from recordings",
        description="Classify the learning rule (or --target, any subject coordinate) of each recorded site "
        "from its session trajectories, per measure and with all measures together (or per observable), on "
        "repeated category-balanced 75/25 splits grouped by subject. Reports accuracy mean ± s.e.m. with "
        "Wilson 95%% intervals; the NetCDF holds per-split accuracies, per-site predictions, confusion "
        "matrices and per-class precision/recall/F1. Several files (one per rig) are combined.",
    )
    ident.add_argument("recordings", type=Path, nargs="+", metavar="FILE", help="recording NetCDF file(s)")
    ident.add_argument("--out", type=Path, help="results NetCDF file (default: next to the first file, <name>.identify.nc)")
    ident.add_argument("--splits", type=int, help="number of train/test splits (default 10)")
    ident.add_argument("--target", help="subject coordinate to predict, e.g. learning_rule (default), "
                       "credit_mechanism, optimizer, task_family, architecture")
    ident.add_argument("--group-by", choices=["subject", "layer"],
                       help="keep each subject on one side of a split (default), or split over layers as the reference")
    ident.add_argument("--classifier", action="append", metavar="NAME[:KEY=VALUE,...]",
                       help="repeatable; linear_svm, random_forest, conv1d, an sklearn alias (logistic_regression, "
                       "knn, extra_trees, gradient_boosting, rbf_svm, lda, naive_bayes, mlp) or an import path "
                       "(sklearn.ensemble.ExtraTreesClassifier), optionally with fixed parameters, e.g. "
                       "'logistic_regression:C=0.1,max_iter=500' (default: random_forest and linear_svm)")
    ident.add_argument("--preset", choices=["fast", "reference"],
                       help="hyperparameter grids: fast (default, small) or the reference's full grids (slow)")
    ident.add_argument("--features", choices=["measures", "observables", "both"],
                       help="feature sets: one per measure and all together (default), one per observable, or both")
    ident.add_argument("--importance", action="store_true", default=None,
                       help="also compute impurity and permutation feature importance (<out>.importance.nc)")
    ident.add_argument("--seed", type=int, help="seed of the splits and classifiers (default 0)")
    ident.add_argument("--force", action="store_true", help="overwrite an existing results file")
    ident.add_argument("--quiet", action="store_true", help="no progress bar")

    validate = commands.add_parser("validate", help="check a protocol file and describe its cohort")
    validate.add_argument("protocol", type=Path, help="protocol YAML file")

    info = commands.add_parser("info", help="summarize a run directory or a NetCDF file")
    info.add_argument("path", type=Path, help="run directory, recording or results file")
    info.add_argument("--health", action="store_true",
                      help="for a run directory or its subjects.nc: a Markdown table of mean final accuracy "
                      "(or probe accuracy) per learning rule x architecture / task")
    add_analysis_commands(commands)
    return parser


def cmd_validate(args) -> int:
    from simlab.protocol import describe, load_protocol, plan_cohort

    protocol = load_protocol(args.protocol)
    print(f"{args.protocol}: valid")
    print(describe(protocol, plan_cohort(protocol)))
    return 0


def cmd_run(args) -> int:
    from simlab.pipeline import run_protocol

    run_protocol(
        args.protocol, args.out, force=args.force, progress=not args.quiet, cluster=args.cluster, scheduler=args.scheduler
    )
    return 0




RECORD_FLAGS = {  # flag destination -> where it goes in the rig settings
    "units": ("units",),
    "sampling": ("sampling",),
    "noise": ("noise",),
    "noise_model": ("noise_model",),
    "rate_gain": ("rate_gain",),
    "count_window": ("count_window",),
    "seed": ("seed",),
    "sessions": ("schedule", "count"),
    "spacing": ("schedule", "spacing"),
    "window": ("schedule", "window"),
    "every": ("schedule", "every"),
    "stimuli": ("stimuli", "source"),
    "stimuli_size": ("stimuli", "size"),
    "stimuli_seed": ("stimuli", "seed"),
    "keep_units": ("keep_units",),
    "max_unit_bytes": ("max_unit_bytes",),
}


def cmd_record(args) -> int:
    from simlab.fileio import refuse_overwrite
    from simlab.recording.contract import write_recording
    from simlab.recording.record import record_cohort
    from simlab.recording.rigfiles import recording_name, resolve_rig
    from simlab.rundir import RunDirectory

    run = RunDirectory.existing(args.run_dir)
    overrides: dict = {}
    flags = {}
    for flag, path in RECORD_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        node = overrides
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        flags[".".join(path)] = "--" + flag.replace("_", "-")
    name, spec = resolve_rig(args.rig, run.protocol(), overrides, names={"rig": "--rig", **flags})
    out = args.out or run.recording(recording_name(name, spec))
    refuse_overwrite(out, args.force)  # before recording: fail fast, lose nothing
    write_recording(record_cohort(run, name, spec, progress=not args.quiet), out, force=args.force)
    run.log(f"record: {name} {spec.model_dump(mode='json')} -> {out}")
    print(f"wrote {out}")
    return 0


def cmd_identify(args) -> int:
    from simlab.analysis.identify import format_table, write_results
    from simlab.specs.analyses import IdentifySpec
    from simlab.fileio import refuse_overwrite, write_text_atomic
    from simlab.pipeline import identify_recordings

    settings = {"splits": args.splits, "target": args.target, "group_by": args.group_by,
                "preset": args.preset, "features": args.features, "importance": args.importance,
                "seed": args.seed,
                "classifiers": [options.classifier_option(c) for c in args.classifier] if args.classifier else None}
    try:
        spec = IdentifySpec(**{k: v for k, v in settings.items() if v is not None})
    except ValueError as exc:
        flags = {"classifiers": "classifier", "group_by": "group-by"}
        raise SimlabError("; ".join(
            f"--{flags.get(e['loc'][0], e['loc'][0])}: {options.message(e)}" for e in exc.errors()
        )) from None
    first = args.recordings[0]
    out = args.out or first.with_name(f"{first.stem}.identify.nc")
    refuse_overwrite(out, args.force)
    importance_out = out.with_name(f"{out.stem}.importance.nc")
    if spec.importance:
        refuse_overwrite(importance_out, args.force)
    results = identify_recordings(args.recordings, spec, progress=not args.quiet)
    table = format_table(results)
    write_results(results, out, force=args.force)
    write_text_atomic(out.with_suffix(".txt"), table + "\n", force=True)
    print(table)
    print(f"wrote {out}")
    if spec.importance:
        from simlab.analysis.importance import format_importance
        from simlab.pipeline import importance_recordings

        importance = importance_recordings(args.recordings, spec, progress=not args.quiet)
        write_results(importance, importance_out, force=args.force)
        text = format_importance(importance)
        write_text_atomic(importance_out.with_suffix(".txt"), text + "\n", force=True)
        print(text)
        print(f"wrote {importance_out}")
    return 0


def cmd_info(args) -> int:
    from simlab.info import describe_path, health_table

    if args.health:
        import xarray as xr

        path = args.path / "subjects.nc" if args.path.is_dir() else args.path
        if not path.exists():
            raise SimlabError(f"{path}: no subject table (train the run first)")
        with xr.open_dataset(path) as table:
            if "final_accuracy" not in table.coords:
                raise SimlabError(f"{path}: not a subject table (no final_accuracy)")
            print(health_table(table.load()))
        return 0
    print(describe_path(args.path))
    return 0


COMMANDS = {
    "run": cmd_run,
    "record": cmd_record,
    "identify": cmd_identify,
    "validate": cmd_validate,
    "info": cmd_info,
    **ANALYSIS_COMMANDS,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command not in ("validate", "info"):
        # commands that compile (training, re-recording noisy rigs) reuse earlier compilations
        from simlab.training.accelerators import enable_compilation_cache

        enable_compilation_cache()
    try:
        return COMMANDS[args.command](args)
    except SimlabError as error:
        print(f"simlab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"simlab {args.command}: interrupted; finished outputs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
