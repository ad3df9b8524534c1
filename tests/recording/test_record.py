"""Recordings of a whole trained cohort (``record_cohort`` via ``simlab run`` and ``simlab record``).

Uses the session's tiny run (tests/conftest.py): 2 architectures (shallow: 2 sites, deep: 3
sites) x 2 rules x 3 replicates on digits (64 inputs, 10 classes), 4 sessions over 30 steps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from simlab.cli.main import main
from simlab.protocol import plan_cohort
from simlab.recording.contract import DIMS, SCHEMA, open_recording, problems
from simlab.recording.observables import observables_for, weight_observables
from simlab.rundir import RunDirectory
from simlab.training.snapshots import read_shard

RIG_MEASURE = {"synapse": "weight", "electrophysiology": "activation", "paired": "activity_change"}
RIG_SEED = {"synapse": 0, "electrophysiology": 1, "paired": 2}  # the protocol's default rigs
LAYER_NAMES = {"shallow": ["dense_0", "readout", ""], "deep": ["dense_0", "dense_1", "readout"]}
DEPTHS = {"shallow": ["early", "middle", ""], "deep": ["early", "middle", "deep"]}
UNITS = {  # units (or synapses, for the synapse rig) of each site; 0 for a padding layer
    "synapse": {"shallow": [64 * 16, 16 * 10, 0], "deep": [64 * 16, 16 * 8, 8 * 10]},
    "electrophysiology": {"shallow": [16, 10, 0], "deep": [16, 8, 10]},
    "paired": {"shallow": [16, 10, 0], "deep": [16, 8, 10]},
}
STEPS = [0, 10, 20, 30]
N_SUBJECTS = 12


def by_architecture(ds: xr.Dataset, architecture: str) -> xr.Dataset:
    return ds.isel(subject=np.flatnonzero(ds["architecture"].values == architecture))


def file_state(paths) -> dict:
    """Modification time and content hash of each file, to show that nothing touched them."""
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths}


# --------------------------------------------------------------------------- recordings of a run


@pytest.mark.parametrize("rig", list(RIG_MEASURE))
def test_run_writes_a_conformant_recording_per_rig(tiny_run, rig):
    path = tiny_run / "recordings" / f"{rig}.nc"
    assert path.is_file()
    assert problems(path) == []
    ds = open_recording(path)
    assert problems(ds) == []

    assert ds["observation"].dims == DIMS
    assert ds["observation"].dtype == np.float32
    assert dict(ds.sizes) == {
        "subject": N_SUBJECTS,
        "layer": 3,
        "session": len(STEPS),
        "observable": len(observables_for(RIG_MEASURE[rig])),
    }
    assert ds.attrs["schema"] == SCHEMA
    assert ds.attrs["Conventions"] == "CF-1.11"
    assert ds.attrs["protocol"] == (tiny_run / "protocol.yaml").read_text()
    settings = yaml.safe_load(ds.attrs["rig"])
    assert settings["type"] == rig
    assert (settings["units"], settings["noise"], settings["seed"]) == ("all", 0.0, RIG_SEED[rig])

    # observables
    expected = observables_for(RIG_MEASURE[rig])
    assert list(ds["observable"].values) == [o.name for o in expected]
    assert list(ds["measure"].values) == [o.measure for o in expected]
    assert list(ds["function"].values) == [o.function for o in expected]
    assert list(ds["statistic"].values) == [o.statistic for o in expected]

    # sessions
    np.testing.assert_array_equal(ds["step"].values, STEPS)
    np.testing.assert_allclose(ds["fraction"].values, np.array(STEPS) / 30)

    # subjects: factors, health, in the subject table's order and values
    table = xr.open_dataset(tiny_run / "subjects.nc").load()
    assert list(ds["subject"].values) == list(table["subject"].values)
    assert set(ds["status"].values) == {"ok"}
    np.testing.assert_allclose(ds["final_accuracy"].values, table["final_accuracy"].values)
    assert sorted(set(ds["learning_rule"].values)) == ["feedback_alignment", "sgdm"]
    assert set(ds["task"].values) == {"digits"}
    assert set(ds["batch_size"].values.tolist()) == {16}
    assert sorted(set(ds["seed"].values.tolist())) == [0, 1, 2]
    for rule in ("sgdm", "feedback_alignment"):
        for architecture in ("shallow", "deep"):
            members = (ds["learning_rule"].values == rule) & (ds["architecture"].values == architecture)
            assert members.sum() == 3, (rule, architecture)


@pytest.mark.parametrize("rig", list(RIG_MEASURE))
def test_sites_are_labelled_and_shallow_subjects_are_padded(tiny_run, rig):
    ds = open_recording(tiny_run / "recordings" / f"{rig}.nc")
    for architecture in ("shallow", "deep"):
        part = by_architecture(ds, architecture)
        n = len(part["subject"])
        np.testing.assert_array_equal(part["layer_name"].values, [LAYER_NAMES[architecture]] * n)
        np.testing.assert_array_equal(part["depth"].values, [DEPTHS[architecture]] * n)
        np.testing.assert_array_equal(part["n_units"].values, [UNITS[rig][architecture]] * n)
        # every unit: as many recorded as available
        np.testing.assert_array_equal(part["n_recorded"].values, part["n_units"].values)

    shallow = by_architecture(ds, "shallow")
    assert np.isnan(shallow["observation"].sel(layer=2).values).all()  # the padding layer
    real = ds["observation"].values[ds["layer_name"].values != ""]  # [site, session, observable]
    if rig == "synapse":  # weights: every statistic is defined
        assert np.isfinite(real).all()
    else:  # a site silent for a stimulus has no skew or kurtosis; most are defined
        assert np.isfinite(real).mean() > 0.9


def subject_coordinates(ds: xr.Dataset, leave_out=("subject",)) -> list[str]:
    return [name for name, coord in ds.coords.items() if coord.dims == ("subject",) and name not in leave_out]


@pytest.mark.parametrize("rig", list(RIG_MEASURE))
def test_subject_coordinates_are_the_subject_tables(tiny_run, rig):
    """Same subjects, same coordinates in the same order, same values and types as subjects.nc
    (less ``population``, the table's note of which snapshot shard holds a subject)."""
    ds = open_recording(tiny_run / "recordings" / f"{rig}.nc")
    table = xr.open_dataset(tiny_run / "subjects.nc").load()
    assert list(ds["subject"].values) == list(table["subject"].values)
    names = subject_coordinates(table, leave_out=("subject", "population"))
    assert subject_coordinates(ds) == names
    assert {"credit_mechanism", "optimizer", "task_family", "health_metric", "replicate"} <= set(names)
    for name in names:
        assert ds[name].dtype == table[name].dtype, name
        np.testing.assert_array_equal(ds[name].values, table[name].values, err_msg=name)


def test_record_copies_the_subject_table_rather_than_rederiving_it(tiny_run_copy):
    from simlab.recording.record import record_cohort
    from simlab.specs.rigs import RigSpec
    from simlab.training.cohort import write_subject_table

    path = tiny_run_copy / "subjects.nc"
    table = xr.open_dataset(path).load()
    optimizers = [f"optimizer{i}" for i in range(N_SUBJECTS)]
    write_subject_table(table.assign_coords(optimizer=("subject", optimizers)), path, force=True)
    ds = record_cohort(RunDirectory(tiny_run_copy), "synapse", RigSpec(type="synapse"), progress=False)
    assert list(ds["optimizer"].values) == optimizers


def test_a_subject_table_of_other_subjects_is_refused(tiny_run_copy):
    from simlab.errors import SimlabError
    from simlab.recording.record import record_cohort
    from simlab.specs.rigs import RigSpec
    from simlab.training.cohort import write_subject_table

    path = tiny_run_copy / "subjects.nc"
    table = xr.open_dataset(path).load()
    write_subject_table(table.isel(subject=slice(None, None, -1)), path, force=True)
    with pytest.raises(SimlabError, match="subjects are not the protocol's cohort"):
        record_cohort(RunDirectory(tiny_run_copy), "synapse", RigSpec(type="synapse"), progress=False)


def test_synapse_recording_holds_each_subjects_own_snapshots(tiny_run):
    """Rows of a recording are its subjects: check the synapse rig's numbers against the
    kernels in the snapshot store, subject by subject."""
    run = RunDirectory(tiny_run)
    ds = open_recording(tiny_run / "recordings" / "synapse.nc")
    for population in plan_cohort(run.protocol).populations:
        shard = read_shard(run.shard(population.id))
        assert shard.subject_ids == [s.id for s in population.subjects]
        for replicate, subject in enumerate(population.subjects):
            recorded = ds["observation"].sel(subject=subject.id)
            for layer, name in enumerate(LAYER_NAMES[subject.architecture]):
                if not name:
                    continue
                kernel = shard.params[name]["w"][replicate]  # [session, ...]
                expected = np.asarray(weight_observables(kernel.reshape(len(kernel), -1)))
                np.testing.assert_allclose(
                    recorded.sel(layer=layer).values, expected, rtol=1e-5, atol=1e-6, err_msg=f"{subject.id} {name}"
                )


def test_recordings_of_different_rigs_combine(tiny_run):
    from simlab.recording.contract import combine_recordings

    combined = combine_recordings([open_recording(tiny_run / "recordings" / f"{rig}.nc") for rig in RIG_MEASURE])
    assert problems(combined) == []
    assert combined.sizes["observable"] == 21 + 21 + 3


# --------------------------------------------------------------------------- simlab record


def test_record_again_with_another_rig_setting(tiny_run_copy, capsys):
    run = tiny_run_copy
    untouched = [
        *sorted((run / "snapshots").glob("*.npz")),
        run / "subjects.nc",
        *sorted((run / "recordings").glob("*.nc")),
    ]
    assert len(untouched) == 4 + 1 + 3
    before = file_state(untouched)

    args = ["record", str(run), "--rig", "electrophysiology", "--units", "3", "--noise", "0.5", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    written = [line.removeprefix("wrote ").strip() for line in out.splitlines() if line.startswith("wrote ")]
    assert len(written) == 1, out
    path = Path(written[0])
    assert path.parent == run / "recordings"
    assert path.name not in {"synapse.nc", "electrophysiology.nc", "paired.nc"}
    assert file_state(untouched) == before  # no retraining, no other output rewritten

    assert problems(path) == []
    ds = open_recording(path)
    settings = yaml.safe_load(ds.attrs["rig"])
    assert (settings["type"], settings["units"], settings["noise"]) == ("electrophysiology", 3, 0.5)
    assert settings["seed"] == RIG_SEED["electrophysiology"]  # kept from the protocol's rig
    original = open_recording(run / "recordings" / "electrophysiology.nc")
    np.testing.assert_array_equal(ds["n_units"].values, original["n_units"].values)
    np.testing.assert_array_equal(ds["n_recorded"].values, np.minimum(3, original["n_units"].values))
    np.testing.assert_array_equal(ds["layer_name"].values, original["layer_name"].values)
    np.testing.assert_array_equal(ds["subject"].values, original["subject"].values)
    real = original["layer_name"].values != ""
    assert not np.allclose(ds["observation"].values[real], original["observation"].values[real], equal_nan=True)
    assert np.isnan(ds["observation"].values[~real]).all()

    # an existing output is never overwritten without --force
    state = file_state([path])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert file_state([path]) == state


def test_record_with_the_protocols_settings_reproduces_the_runs_recording(tiny_run_copy, capsys):
    out = tiny_run_copy / "again.nc"
    assert main(["record", str(tiny_run_copy), "--rig", "synapse", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    again, original = open_recording(out), open_recording(tiny_run_copy / "recordings" / "synapse.nc")
    xr.testing.assert_identical(again.drop_attrs(), original.drop_attrs())
    assert {k: v for k, v in again.attrs.items() if k not in ("created", "history")} == {
        k: v for k, v in original.attrs.items() if k not in ("created", "history")
    }
