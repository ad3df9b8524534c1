"""``simlab fit`` and ``simlab predict``: an identifier fitted on one cohort, applied to another recording."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from simlab.cli import options
from simlab.errors import SimlabError
from simlab.specs.analyses import TRANSFORMS, FitSpec

__all__ = ["IDENTIFIER_COMMANDS", "add_identifier_commands"]

default = options.default
FIT_SETTINGS = ("classifier", "observables", "transform", "target", "preset", "group_by", "calibration", "folds",
                "ood_quantile", "ood_threshold", "seed", "health")


def add_identifier_commands(commands) -> None:
    fit = commands.add_parser(
        "fit", help="train one calibrated classifier on a whole cohort and save it, to apply to new recordings",
        description="Train one classifier on every usable site of a run's (or recordings') cohort, with the "
        "features of 'simlab identify' (transformed session trajectories of the finite observables plus the depth "
        "group), calibrate its probabilities (sklearn CalibratedClassifierCV on class-stratified folds that keep a "
        "subject's sites together), and save it: DIR/model.skops (skops, no pickle) and DIR/manifest.json "
        "(observables, sessions, rigs, transform, classes, the training cohort's factor levels, the model's sha256).",
    )
    fit.add_argument("recordings", type=Path, nargs="+", metavar="FILE",
                     help="recording NetCDF file(s), or one run directory")
    fit.add_argument("--out", type=Path, help="a directory, or a .skops file with its .json manifest beside it "
                     "(default: RUN_DIR/identifier for a run directory, else <first file>.identifier/)")
    group = fit.add_argument_group("identifier")
    group.add_argument("--classifier", metavar="NAME[:KEY=VALUE,...]", help="one classifier, named as for "
                       f"'simlab identify --classifier' (default {default(FitSpec, 'classifier')})")
    group.add_argument("--observables", nargs="+", metavar="NAME", help="all, measures (weight, activation, "
                       f"activity_change) or observable names (default {default(FitSpec, 'observables')})")
    group.add_argument("--transform", nargs="+", choices=list(TRANSFORMS), metavar="TRANSFORM",
                       help=f"feature transform(s): {', '.join(TRANSFORMS)} (default {default(FitSpec, 'transform')})")
    group.add_argument("--target", help=f"subject coordinate to predict (default {default(FitSpec, 'target')})")
    group.add_argument("--preset", choices=["fast", "reference"], help="hyperparameter grids "
                       f"(default {default(FitSpec, 'preset')})")
    group.add_argument("--group-by", choices=["subject", "population"], help="what the calibration folds keep "
                       f"together (default {default(FitSpec, 'group_by')})")
    group.add_argument("--calibration", choices=["sigmoid", "isotonic"], help="map from scores to probabilities "
                       f"(default {default(FitSpec, 'calibration')})")
    group.add_argument("--folds", type=int, help=f"calibration folds (default {default(FitSpec, 'folds')})")
    group.add_argument("--ood-quantile", type=float, metavar="Q", help="a feature is outside the training "
                       f"distribution outside its [Q, 1-Q] quantiles (default {default(FitSpec, 'ood_quantile')})")
    group.add_argument("--ood-threshold", type=float, metavar="F", help="flag a site when more than this fraction "
                       "of its features is outside (default: the 99th percentile over held-out training sites)")
    group.add_argument("--seed", type=int, help=f"seed of the folds and the classifier (default {default(FitSpec, 'seed')})")
    group.add_argument("--min-gain", dest="health", type=options.min_gain, metavar="G",
                       help="leave out subjects whose final accuracy is less than G above their untrained value")
    fit.add_argument("--rigs", nargs="+", metavar="RIG", help="with a run directory: these rigs' recordings "
                     "(default: all of them, combined)")
    fit.add_argument("--force", action="store_true", help="overwrite an existing identifier")

    predict = commands.add_parser(
        "predict", help="apply a fitted identifier to a recording: per-site and per-subject predictions",
        description="Predict the class of every site of a recording (or a run's recordings) with calibrated "
        "probabilities, pool each subject's sites (the product of their probabilities, renormalized: a sum of "
        "log-probabilities), and flag sites outside the training distribution (the fraction of a site's features "
        "outside the training sites' quantile range). A recording whose observables, sessions or rig differ from "
        "the identifier's is refused with what differs and how to re-record. With known labels (the target "
        "coordinate): accuracy, confusion matrices, per-class shares and a reliability diagram. Writes "
        "<out>.nc, <out>.txt and, with labels, <out>-reliability.png/.svg/.pdf.",
    )
    predict.add_argument("identifier", type=Path, metavar="IDENTIFIER",
                         help="a directory made by 'simlab fit', its manifest.json or its .skops file")
    predict.add_argument("recordings", type=Path, nargs="+", metavar="RECORDING",
                         help="recording NetCDF file(s), or one run directory")
    predict.add_argument("--out", type=Path, help="predictions NetCDF file (default: RUN_DIR/analyses/"
                         "predict-<identifier>.nc for a run directory, else <first file>.predict.nc beside it)")
    predict.add_argument("--rigs", nargs="+", metavar="RIG", help="with a run directory: these rigs' recordings")
    predict.add_argument("--trust", action="store_true", help="load a model file that holds types simlab's own "
                         "identifiers do not (loading runs their code: only for files from a source you trust)")
    predict.add_argument("--force", action="store_true", help="overwrite existing predictions")
    predict.add_argument("--quiet", action="store_true", help="no table")


def _sources(paths: list[Path]):
    import simlab

    if len(paths) > 1 and any(p.is_dir() for p in paths):
        raise SimlabError("recordings: give one run directory, or recording files")
    return simlab.open_run(paths[0]) if paths[0].is_dir() else (paths if len(paths) > 1 else paths[0])


def cmd_fit(args) -> int:
    import simlab
    from simlab.analysis.identifier import describe_identifier

    settings = {name: getattr(args, name) for name in FIT_SETTINGS if getattr(args, name, None) is not None}
    if "classifier" in settings:
        settings["classifier"] = options.classifier_option(settings["classifier"])
    first = args.recordings[0]
    out = args.out or (first / "identifier" if first.is_dir() else first.with_name(f"{first.stem}.identifier"))
    start = time.perf_counter()
    identifier = simlab.fit(_sources(list(args.recordings)), out=out, rigs=args.rigs, force=args.force, **settings)
    seconds = time.perf_counter() - start
    print(describe_identifier(identifier.manifest))
    print(f"wrote {identifier.source} and {identifier.manifest['model_file']} "
          f"({identifier.manifest['model_bytes'] / 1e6:.1f} MB) in {seconds:.1f} s")
    return 0


def predict_out(identifier: Path, recordings: list[Path]) -> Path:
    from simlab.rundir import RunDirectory

    name = identifier.stem if identifier.suffix in (".json", ".skops") else identifier.name
    if identifier.suffix == ".json" and identifier.name == "manifest.json":
        name = identifier.parent.name
    first = recordings[0]
    if first.is_dir():
        return RunDirectory(first).analysis(f"predict-{name}", "nc")
    return first.with_name(f"{first.stem}.predict.nc")


def cmd_predict(args) -> int:
    import simlab
    from simlab.analysis.analyses import write_result_and_table
    from simlab.analysis.identifier import format_predictions
    from simlab.fileio import refuse_overwrite

    out = args.out or predict_out(args.identifier, list(args.recordings))
    refuse_overwrite(out, args.force)
    result = simlab.predict(args.identifier, _sources(list(args.recordings)), rigs=args.rigs, trust=args.trust)
    table = format_predictions(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result_and_table(result, table, out, force=args.force)
    if not args.quiet:
        print(table)
    print(f"wrote {out}")
    if int(result.attrs.get("labels_known", 0)):
        from simlab.analysis.figures import plot_reliability

        figure = plot_reliability(result, out.with_name(f"{out.stem}-reliability"))
        print(f"wrote {figure.png}, {figure.svg.name} and {figure.pdf.name}")
    return 0


IDENTIFIER_COMMANDS = {"fit": cmd_fit, "predict": cmd_predict}
