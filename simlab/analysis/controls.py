"""Identification with its controls: the ``identify`` analysis of a run and of ``simlab
identify``. The matched-learning-rate control and the transfer table build on
:func:`simlab.analysis.identify.identify`, so they are attached here, above it, and one
results file and one printed table hold all three.
"""

from __future__ import annotations

import xarray as xr

from simlab.analysis.analyses import register_analysis
from simlab.analysis.identify import format_table, identify
from simlab.analysis.matched import attach_matched, format_matched, matched_control
from simlab.analysis.transfer import attach_transfer, format_transfer, transfer_table
from simlab.specs.analyses import IdentifySpec

__all__ = ["format_identify", "identify_with_controls"]


def identify_with_controls(ds: xr.Dataset, spec: IdentifySpec = IdentifySpec(), progress: bool = False,
                           n_jobs: int | None = None) -> xr.Dataset:
    """:func:`identify`, with the controls its settings ask for in the same results:
    ``matched_control`` (:func:`simlab.analysis.matched.matched_control`) and
    ``report_transfer`` (:func:`simlab.analysis.transfer.transfer_table`)."""
    results = identify(ds, spec, progress=progress, n_jobs=n_jobs)
    if spec.matched_control:
        results = attach_matched(results, matched_control(ds, spec, progress=progress, n_jobs=n_jobs))
    if spec.transfer_transforms:
        table = transfer_table(ds, spec, spec.transfer_transforms, progress=progress, n_jobs=n_jobs, within=results)
        results = attach_transfer(results, table)
    return results


def format_identify(results: xr.Dataset) -> str:
    """Identify's table, then the tables of the controls the results hold."""
    lines = [format_table(results)]
    if "matched_caliper" in results.attrs:
        lines += ["", format_matched(results)]
    if "transfer_accuracy" in results:
        lines += ["", format_transfer(results)]
    return "\n".join(lines)


register_analysis("identify", spec=IdentifySpec, compute=identify_with_controls, table=format_identify)
