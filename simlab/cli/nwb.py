"""``simlab export --nwb`` and ``simlab import-nwb``: NWB files out of a recording, and into one."""

from __future__ import annotations

import time
from pathlib import Path

from simlab.cli import options
from simlab.errors import SimlabError

__all__ = ["NWB_COMMANDS", "add_nwb_commands"]


def add_nwb_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="write a recording's kept unit responses (or synapse weights) as NWB files, one per subject",
        description="Export a recording made with --keep-units (simlab record RUN --rig electrophysiology "
        "--keep-units) as NWB files, one per subject: the subject's description (architecture, task, learning rule "
        "and its settings, seed) as JSON in Subject.description, one epoch per session (training step and fraction "
        "as columns), the stimulus presentations as trials, and the responses as a Units table with spike times "
        "(Poisson rigs) or one RoiResponseSeries per site in the ophys module (other noise models); a synapse rig's "
        "kept weights as one table per site in the synapses module (synapse index, weight per session). docs/nwb.md "
        "describes the encoding. Needs pynwb: pip install 'simlab[nwb]'.",
    )
    export.add_argument("source", type=Path, metavar="RUN", help="a run directory, or a recording NetCDF file")
    export.add_argument("--nwb", type=Path, required=True, metavar="DIR", help="directory for the NWB files "
                        "(<subject>.nwb)")
    export.add_argument("--rig", help="with a run directory: the recording to export, by its name in "
                        "RUN/recordings/ (default: the only one with kept unit responses)")
    export.add_argument("--force", action="store_true", help="overwrite existing NWB files")
    export.add_argument("--quiet", action="store_true", help="no progress bar")

    imp = commands.add_parser(
        "import-nwb", help="read NWB files (spike times or ROI responses, with trials) as a simlab recording",
        description="Turn NWB files into a recording of activation observables: per session (an epoch, or a "
        "file) and site (electrode group, units-table location or imaging plane), each unit's response to each "
        "trial (its spike rate in the trial's window, or the mean ROI response in it) is averaged over the trials "
        "of each stimulus, and the observables of that [stimulus, unit] matrix are recorded. Files with one "
        "subject_id are one subject. The learning rule is 'unknown' unless a file is a simlab export (whose "
        "subject description comes back). Needs pynwb: pip install 'simlab[nwb]'.",
    )
    imp.add_argument("files", type=Path, nargs="+", metavar="FILE", help="NWB files, or directories of .nwb files")
    imp.add_argument("--out", type=Path, required=True, help="the recording NetCDF file to write")
    group = imp.add_argument_group("mapping")
    group.add_argument("--window", type=_window, metavar="START:END", help="seconds after each trial's start "
                       "over which responses are taken (default: the trial, start_time to stop_time)")
    group.add_argument("--sessions", choices=["auto", "epochs", "files"], help="what a session is: each epoch, "
                       "each file, or auto (epochs where a file has them) (default auto)")
    group.add_argument("--epoch-tags", nargs="+", metavar="TAG", help="only epochs with one of these tags are "
                       "sessions (default: every epoch)")
    group.add_argument("--responses", choices=["auto", "units", "rois"], help="read the Units table's spike times "
                       "or the ROI response series (default auto: units where present)")
    group.add_argument("--units-where", nargs="+", metavar="COLUMN=VALUE", help="keep only units (ROIs) whose "
                       "column has this value, e.g. quality=good (default: every unit)")
    group.add_argument("--min-units", type=int, help="leave out sites with fewer units in any session (default 1)")
    group.add_argument("--stimulus-column", help="the trials table's stimulus-identity column (default stimulus)")
    group.add_argument("--sites", nargs="+", metavar="SITE", help="the sites to keep, nearest the input first "
                       "(default: all, in the file's order)")
    group.add_argument("--rate-gain", type=float, help="spike rates (Hz) are divided by this to give activations "
                       "(default: a simlab export's rate_gain, else 1)")
    group.add_argument("--fractions", nargs="+", type=float, metavar="F", help="the training fraction of each "
                       "session (default: a simlab export's, else evenly spaced from 0 to 1)")
    group.add_argument("--percentiles", choices=["nearest", "linear"], help="median and third quartile method "
                       "(default: a simlab export's, else nearest)")
    group.add_argument("--rig", type=Path, metavar="RIG.yaml", help="rig settings (a rig YAML file) that this "
                       "recording is taken to match, stored in its 'rig' attribute (simlab predict compares them)")
    imp.add_argument("--force", action="store_true", help="overwrite an existing output file")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")


def _window(text: str) -> tuple[float, float]:
    import argparse

    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END in seconds, got {text!r}") from None
    return start, end


def cmd_export(args) -> int:
    import simlab

    start = time.perf_counter()
    paths = simlab.export_nwb(args.source, args.nwb, rig=args.rig, force=args.force, progress=not args.quiet)
    size = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} NWB files ({size / 1e6:.1f} MB) to {args.nwb} in {time.perf_counter() - start:.1f} s")
    return 0


IMPORT_SETTINGS = ("window", "sessions", "epoch_tags", "responses", "min_units", "stimulus_column", "sites",
                   "rate_gain", "fractions", "percentiles")


def cmd_import(args) -> int:
    import simlab

    settings = options.given(args, IMPORT_SETTINGS)
    if args.units_where:
        pairs = [item.split("=", 1) for item in args.units_where]
        if any(len(p) != 2 for p in pairs):
            raise SimlabError("--units-where: expected COLUMN=VALUE pairs")
        settings["units_where"] = dict(pairs)
    if args.rig is not None:
        settings["rig"] = args.rig
    start = time.perf_counter()
    recording = simlab.import_nwb(args.files, out=args.out, force=args.force, progress=not args.quiet, **settings)
    print(f"imported {recording.sizes['subject']} subjects, {recording.sizes['session']} sessions, up to "
          f"{recording.sizes['layer']} sites in {time.perf_counter() - start:.1f} s")
    print(f"wrote {args.out}")
    return 0


NWB_COMMANDS = {"export": cmd_export, "import-nwb": cmd_import}
