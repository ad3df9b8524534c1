"""The ``simlab`` command: run, record, identify, validate, info, and the analyses of a run.

Each command parses its flags and calls the Python API (:mod:`simlab.api`); it adds only
what a shell needs: default output paths, printed tables, exit codes. A flag's destination is
the API parameter it sets, so an error that names a parameter is shown with its flag. Flag
defaults are the settings models' defaults (None here means "the model's").

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
from simlab.cli.analyses import ANALYSIS_COMMANDS, add_analysis_commands, add_identify_options
from simlab.cli.identifier import IDENTIFIER_COMMANDS, add_identifier_commands
from simlab.cli.nwb import NWB_COMMANDS, add_nwb_commands
from simlab.errors import SimlabError
from simlab.specs.analyses import DEFAULT_MARGIN, HealthSpec, IdentifySpec
from simlab.specs.classifiers import allowing_imports
from simlab.specs.protocol import Calibrate
from simlab.specs.rigs import RigSpec, ScheduleSpec, StimulusSpec

EPILOG = """examples:
  simlab validate protocols/quickstart.yaml
  simlab run protocols/quickstart.yaml --out runs/quickstart
  simlab record runs/quickstart --rig electrophysiology --units 20 --noise 0.5
  simlab identify runs/quickstart
  simlab identify runs/quickstart/recordings/synapse.nc runs/quickstart/recordings/electrophysiology.nc
  simlab info runs/quickstart
  simlab robustness runs/quickstart --units 16 64 all --noise 0 0.3 1
  simlab plan runs/quickstart --target 0.9
  simlab report runs/quickstart
  simlab fit runs/transfer_fit --transform diff
  simlab predict runs/transfer_fit/identifier runs/transfer_test
  simlab export runs/quickstart --nwb runs/quickstart/nwb --rig electrophysiology-keep_units
  simlab import-nwb experiment/*.nwb --out experiment.nc
"""

# record's flags -> where each goes in the rig settings (RigSpec)
RECORD_SETTINGS = {
    "units": ("units",),
    "sampling": ("sampling",),
    "noise": ("noise",),
    "noise_model": ("noise_model",),
    "rate_gain": ("rate_gain",),
    "count_window": ("count_window",),
    "seed": ("seed",),
    "percentiles": ("percentiles",),
    "noise_placement": ("noise_placement",),
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
    parser.set_defaults(_commands=commands)  # flags_of reads each command's flags from it

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
            "Every setting lands in the recording's 'rig' attribute. The file is RUN_DIR/recordings/<rig>.nc "
            "when no flag changes the rig's settings (the file 'simlab run' wrote), else the rig's name "
            "followed by each setting that differs, in the order of this help: --units 20 --noise 0.5 "
            "writes RUN_DIR/recordings/<rig>-units20-noise0.5.nc."
        )
    )
    record.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory made by 'simlab run'")
    record.add_argument("--rig", required=True, help="rig name in the protocol, a rig type, or a rig YAML file")
    default = options.default
    units = record.add_argument_group("units")
    units.add_argument("--units", type=options.units, help="units per site: 'all', a count, or a fraction in (0, 1] "
                       f"(default {default(RigSpec, 'units')})")
    units.add_argument("--sampling", choices=["chronic", "acute"], help="same units every session (chronic) or new "
                       f"ones (acute) (default {default(RigSpec, 'sampling')})")
    noise = record.add_argument_group("measurement noise")
    noise.add_argument("--noise-model", choices=["gaussian", "gain", "lognormal", "poisson"],
                       help=f"noise model (default {default(RigSpec, 'noise_model')})")
    noise.add_argument("--noise", type=float, help="scale of the noise: sd of gaussian, gain and lognormal noise "
                       f"(default {default(RigSpec, 'noise')})")
    noise.add_argument("--rate-gain", type=float, help="poisson: firing rate (Hz) per unit of activation "
                       f"(default {default(RigSpec, 'rate_gain')})")
    noise.add_argument("--count-window", type=float, help="poisson: spike-counting window in seconds "
                       f"(default {default(RigSpec, 'count_window')})")
    noise.add_argument("--seed", type=int, help="the rig's seed for unit sampling and noise (default: the rig's)")
    noise.add_argument("--noise-placement", choices=["terms", "total"], help="paired rig: noise on each input "
                       "unit's term before the sum (terms, the reference's) or on the activity change (total) "
                       f"(default {default(RigSpec, 'noise_placement')})")
    stats = record.add_argument_group("statistics")
    stats.add_argument("--percentiles", choices=["nearest", "linear"], help="median and third quartile: one of the "
                       "values, as the reference's TensorFlow code (nearest), or linear interpolation "
                       f"(default {default(RigSpec, 'percentiles')})")
    schedule = record.add_argument_group("schedule (which of the run's sessions)")
    schedule.add_argument("--sessions", type=int, help="record this many sessions (default: all)")
    schedule.add_argument("--spacing", choices=["linear", "log"], help="spacing of --sessions in training steps "
                          f"(default {default(ScheduleSpec, 'spacing')})")
    schedule.add_argument("--window", type=options.window, metavar="START:END",
                          help="only sessions in this fraction of training (default 0:1)")
    schedule.add_argument("--every", type=int, metavar="K", help="every k-th session "
                          f"(default {default(ScheduleSpec, 'every')})")
    stimuli = record.add_argument_group("stimuli (electrophysiology and paired rigs)")
    stimuli.add_argument("--stimuli", choices=["heldout", "noise"], help="the rig's own stimulus set instead of the run's")
    stimuli.add_argument("--stimuli-size", type=int, help="size of the rig's stimulus set "
                         f"(default {default(StimulusSpec, 'size')})")
    stimuli.add_argument("--stimuli-seed", type=int, help="seed of the rig's stimulus set "
                         f"(default {default(StimulusSpec, 'seed')})")
    raw = record.add_argument_group("raw unit recordings")
    raw.add_argument("--keep-units", action="store_true", default=None, help="also store per-unit responses")
    raw.add_argument("--max-unit-bytes", type=int, help="refuse to keep unit responses larger than this "
                     f"(default {default(RigSpec, 'max_unit_bytes')} bytes)")
    record.add_argument("--out", type=Path, help="output NetCDF file (default: in RUN_DIR/recordings/, named as above)")
    record.add_argument("--force", action="store_true", help="overwrite an existing output file")
    record.add_argument("--quiet", action="store_true", help="no progress bar")

    ident = commands.add_parser(
        "identify", help="identify the learning rule from recordings",
        description="Classify the learning rule (or --target, any subject coordinate) of each recorded site "
        "from its session trajectories, per measure and with all measures together (or per observable), on "
        "repeated category-balanced 75/25 splits grouped by subject. Reports accuracy mean ± s.e.m. with "
        "Wilson 95% intervals; the NetCDF holds per-split accuracies, per-site predictions, confusion "
        "matrices and per-class precision/recall/F1. Several files (one per rig) are combined; a run "
        "directory stands for all its rigs' recordings, with the protocol's identify settings. "
        "--matched-control adds rule pairs identified on subjects matched by learning rate; "
        "--report-transfer adds held-out-architecture and held-out-task accuracy per transform and classifier.",
    )
    ident.add_argument("recordings", type=Path, nargs="+", metavar="FILE",
                       help="recording NetCDF file(s), or one run directory")
    ident.add_argument("--out", type=Path, help="results NetCDF file (default: RUN_DIR/analyses/identify.nc for a run "
                       "directory, RUN_DIR/analyses/identify-<recordings>.nc for recordings of a run, else "
                       "<first file>.identify.nc next to it)")
    add_identify_options(ident, analysis=False)
    ident.add_argument("--force", action="store_true", help="overwrite an existing results file")
    ident.add_argument("--quiet", action="store_true", help="no progress bar")

    calibrate = commands.add_parser(
        "calibrate", help="search each population's learning rates before training (no cohort is trained)",
        description="For every population (architecture, task, learning rule, batch size), train a log-spaced grid "
        "of learning rates around its setting (then of its feedback-pathway or Hebbian rate at the best one) on "
        "seeds no subject has, judged by the health metric on a held-out part of the training split; a setting "
        "under which a seed diverges or ends no better than its untrained network (+ --min-gain) is rejected, the "
        "best accepted one is chosen. Settings: the protocol's training.calibrate, else the defaults, then these "
        "flags. Writes RUN_DIR/calibration.nc and .txt (every setting tried, its score per seed, the choice), "
        "caches each population under RUN_DIR/calibration/ (simlab run of a protocol with training.calibrate "
        "reuses it), and RUN_DIR/protocol.calibrated.yaml: the protocol with the chosen rates pinned.",
    )
    calibrate.add_argument("protocol", type=Path, help="protocol YAML file")
    calibrate.add_argument("--out", type=Path, help="run directory holding the cache (default: runs/<protocol name>)")
    for flag, kind, words in (
        ("steps", int, "training steps per setting (default: a third of training.steps)"),
        ("seeds", int, f"seeds per setting (default {default(Calibrate, 'seeds')})"),
        ("points", int, f"grid points per rate (default {default(Calibrate, 'points')})"),
        ("span", float, f"the grid runs from rate/span to rate*span (default {default(Calibrate, 'span')})"),
        ("validation_fraction", float, "part of the training split held out to judge "
         f"(default {default(Calibrate, 'validation_fraction')})"),
        ("min_gain", float, f"each seed must beat its untrained net by this (default {default(Calibrate, 'min_gain')})"),
        ("keep", float, f"healthy range: rates reaching keep x the best gain (default {default(Calibrate, 'keep')})"),
    ):
        calibrate.add_argument(f"--{flag.replace('_', '-')}", type=kind, help=words)
    calibrate.add_argument("--rates", nargs="+", metavar="RATE", help="the rate settings searched (default: every "
                           "rate of each rule: learning_rate, feedback_learning_rate, hebbian_learning_rate)")
    calibrate.add_argument("--write-defaults", type=Path, metavar="FILE",
                           help="also write the choices per rule and architecture family (and per net, where a "
                           "family had several) as a table of defaults (the form of simlab/specs/rule_defaults.yaml)")
    calibrate.add_argument("--force", action="store_true", help="search again where a population is cached")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")

    validate = commands.add_parser("validate", help="check a protocol file and describe its cohort")
    validate.add_argument("protocol", type=Path, help="protocol YAML file")

    info = commands.add_parser("info", help="summarize a run directory or a NetCDF file")
    info.add_argument("path", type=Path, help="run directory, recording or results file")
    info.add_argument("--health", action="store_true",
                      help="for a run directory or its subjects.nc: a Markdown table of mean final accuracy "
                      "(or probe accuracy) per learning rule x architecture / task, marking cells with subjects "
                      "that did not learn")
    info.add_argument("--min-gain", dest="health_setting", type=options.min_gain, metavar="G",
                      help="with --health: a subject learned when its final accuracy is at least G above its "
                      "untrained value (default: the protocol's identify health min_gain, else "
                      f"{DEFAULT_MARGIN:g})")
    add_analysis_commands(commands)
    add_identifier_commands(commands)
    add_nwb_commands(commands)
    for command in commands.choices.values():  # every command reads a protocol or classifier settings
        command.add_argument("--allow-imports", action="store_true", help="let the protocol (or settings) name "
                             "classifiers by import paths outside sklearn: importing runs their code, so only for "
                             "files you trust (docs/trust.md)")
    return parser


def cmd_validate(args) -> int:
    import simlab

    text = simlab.validate(args.protocol)
    print(f"{args.protocol}: valid")
    print(text)
    return 0


def cmd_run(args) -> int:
    import simlab

    simlab.run(args.protocol, args.out, force=args.force, progress=not args.quiet, cluster=args.cluster,
               scheduler=args.scheduler)
    return 0


CALIBRATE_SETTINGS = ("steps", "seeds", "points", "span", "validation_fraction", "min_gain", "keep", "rates")


def cmd_calibrate(args) -> int:
    import datetime
    import json

    import yaml

    import simlab

    settings = {name: getattr(args, name) for name in CALIBRATE_SETTINGS if getattr(args, name) is not None}
    table = simlab.calibrate(args.protocol, args.out, force=args.force, progress=not args.quiet, **settings)
    out = args.out if args.out is not None else Path("runs") / simlab.load_protocol(args.protocol).name
    print(f"calibration: {out / 'calibration.nc'}; the protocol with these rates: {out / 'protocol.calibrated.yaml'}")
    if args.write_defaults is not None:
        from simlab.fileio import write_text_atomic
        from simlab.protocol import parse_protocol
        from simlab.training.calibration import defaults_table_from

        pinned = parse_protocol(table.attrs["protocol"], source=str(out / "protocol.calibrated.yaml"))
        provenance = {
            "command": " ".join(["simlab", *sys.argv[1:]]),
            "date": datetime.date.today().isoformat(),
            "budget": json.loads(table.attrs["calibrate"]),
            "training_seconds": round(float(table.attrs["seconds"]), 1),
        }
        choices = json.loads(table.attrs["choices"])
        text = yaml.safe_dump(defaults_table_from(pinned, choices, provenance), sort_keys=False, default_flow_style=None)
        write_text_atomic(args.write_defaults, text, force=True)
        print(f"defaults table: {args.write_defaults}")
    return 0


def record_settings(args) -> dict:
    """The rig settings the flags give, nested as in a rig (``--sessions`` -> schedule.count)."""
    settings: dict = {}
    for flag, path in RECORD_SETTINGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        node = settings
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return settings


def cmd_record(args) -> int:
    import simlab

    recording = simlab.record(args.run_dir, args.rig, write=True, out=args.out, force=args.force,
                              progress=not args.quiet, **record_settings(args))
    print(f"wrote {recording.encoding['source']}")
    return 0


def identify_out(recordings: list[Path]) -> Path:
    """Where ``simlab identify`` writes by default: under the run's ``analyses/`` for a run
    directory or recordings of a run (never beside the recordings), else beside the file."""
    from simlab.rundir import RunDirectory

    first = recordings[0]
    if first.is_dir():
        return RunDirectory(first).analysis("identify", "nc")
    parent = first.resolve().parent
    if parent.name == "recordings" and RunDirectory(parent.parent).protocol_file.is_file():
        names = "+".join(path.stem for path in recordings)
        return RunDirectory(parent.parent).analysis(f"identify-{names}", "nc")
    return first.with_name(f"{first.stem}.identify.nc")


def cmd_identify(args) -> int:
    import simlab
    from simlab.analysis.analyses import write_result_and_table
    from simlab.analysis.controls import format_identify
    from simlab.fileio import refuse_overwrite

    sources = list(args.recordings)
    if len(sources) > 1 and any(path.is_dir() for path in sources):
        raise SimlabError("recordings: give one run directory, or recording files")
    base = {}
    if sources[0].is_dir():
        sources = simlab.open_run(sources[0])
        base = sources.protocol.analyses.get("identify", IdentifySpec()).model_dump()
    settings = {**base, **options.given(args, options.IDENTIFY_SETTINGS)}
    out = args.out or identify_out(list(args.recordings))
    importance_out = out.with_name(f"{out.stem}.importance.nc")
    refuse_overwrite(out, args.force)
    importance = settings.pop("importance", False)
    if importance:
        refuse_overwrite(importance_out, args.force)
    results = simlab.identify(sources, progress=not args.quiet, **settings)
    table = format_identify(results)
    write_result_and_table(results, table, out, force=args.force)
    print(table)
    print(f"wrote {out}")
    if importance:
        from simlab.analysis.importance import format_importance

        ranked = simlab.importance(sources, progress=not args.quiet, **settings)
        text = format_importance(ranked)
        write_result_and_table(ranked, text, importance_out, force=args.force)
        print(text)
        print(f"wrote {importance_out}")
    return 0


def info_health(run_dir: Path, given: dict | None) -> HealthSpec:
    """The health setting of ``simlab info --health``: ``--min-gain`` if given, else the run's
    protocol's identify health setting (where the table is in a run), else the default."""
    from simlab.rundir import RunDirectory

    if given is not None:
        return HealthSpec(**given)
    run = RunDirectory(run_dir)
    if run.protocol_file.is_file():
        identify = run.protocol.analyses.get("identify")
        if identify is not None:
            return identify.health
    return HealthSpec()


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
            print(health_table(table.load(), info_health(path.parent, args.health_setting)))
        return 0
    if args.health_setting is not None:
        raise SimlabError("--min-gain goes with --health")
    print(describe_path(args.path))
    return 0


COMMANDS = {
    "run": cmd_run,
    "record": cmd_record,
    "identify": cmd_identify,
    "calibrate": cmd_calibrate,
    "validate": cmd_validate,
    "info": cmd_info,
    **ANALYSIS_COMMANDS,
    **IDENTIFIER_COMMANDS,
    **NWB_COMMANDS,
}


def flags_of(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """API parameter -> the flag of ``command`` that sets it (flags are named by parameter)."""
    flags = {}
    for action in parser.get_default("_commands").choices[command]._actions:
        if action.option_strings:
            flags[action.dest] = max(action.option_strings, key=len)
        elif action.dest not in ("help",):
            flags[action.dest] = action.metavar or action.dest.upper()
    if command == "record":
        for dest, path in RECORD_SETTINGS.items():
            flags[".".join(path)] = flags[dest]
    return {**flags, **options.EXTRA_FLAGS.get(command, {})}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command not in ("validate", "info"):
        # commands that compile (training, re-recording noisy rigs) reuse earlier compilations
        from simlab.training.accelerators import enable_compilation_cache

        enable_compilation_cache()
    try:
        with allowing_imports(args.allow_imports):
            return COMMANDS[args.command](args)
    except SimlabError as error:
        print(f"simlab {args.command}: error: {error.message(flags_of(parser, args.command))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"simlab {args.command}: interrupted; finished outputs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
