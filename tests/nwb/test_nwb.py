"""NWB export and import: files nwbinspector passes, contents checked by hand, the round
trip of a simlab recording, hand-written experimental files, and the errors for what a
file lacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

pynwb = pytest.importorskip("pynwb")

import simlab  # noqa: E402
from simlab.errors import SimlabError  # noqa: E402
from simlab.recording.contract import problems  # noqa: E402

BAD = ("CRITICAL", "BEST_PRACTICE_VIOLATION", "PYNWB_VALIDATION", "ERROR")


def read(path):
    io = pynwb.NWBHDF5IO(str(path), "r")
    return io, io.read()


@pytest.mark.parametrize("name", ["poisson", "lognormal"])
def test_exported_files_pass_nwbinspector(exported, name):
    nwbinspector = pytest.importorskip("nwbinspector")
    for path in exported[name][-1:]:  # a deep subject (three sites)
        found = [m for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(path)) if m.importance.name in BAD]
        assert not found, [(m.importance.name, m.check_function_name, m.message) for m in found]


def test_a_poisson_export_holds_the_subject_sessions_trials_and_spike_counts(kept, exported):
    recording = kept["poisson"]
    i = recording.sizes["subject"] - 1  # a deep subject: three sites
    io, nwb = read(exported["poisson"][i])
    try:
        meta = json.loads(nwb.subject.description)
        coords = meta["coordinates"]
        assert nwb.subject.subject_id == str(recording["subject"].values[i])
        for name in ("learning_rule", "architecture", "task", "seed", "batch_size"):
            assert coords[name] == recording[name].values[i].item()
        assert coords["rule_settings"] == json.loads(str(recording["rule_settings"].values[i]))
        assert [s["name"] for s in meta["sites"]] == ["dense_0", "dense_1", "readout"]
        epochs = nwb.epochs.to_dataframe()
        assert list(epochs["step"]) == list(recording["step"].values)
        np.testing.assert_allclose(epochs["fraction"], recording["fraction"].values)
        trials = nwb.trials.to_dataframe()
        n_stimuli = recording.sizes["stimulus"]
        assert len(trials) == recording.sizes["session"] * n_stimuli
        assert list(trials["stimulus"][:n_stimuli]) == list(range(n_stimuli))
        # unit 0 of site dense_1: spikes in each trial = response * rate_gain * count_window
        units = nwb.units.to_dataframe()
        row = units[[g.name == "dense_1" for g in units["electrode_group"]]].iloc[0]
        column = list(recording["unit_index"].values[i, 1]).index(row["unit_index"])
        expected = np.rint(recording["unit_response"].values[i, 1, :, :, column] * 20.0 * 0.5).ravel()
        spikes = np.asarray(row["spike_times"])
        counts = [((spikes >= a) & (spikes < b)).sum() for a, b in zip(trials["start_time"], trials["stop_time"])]
        np.testing.assert_array_equal(counts, expected)
        assert np.all(np.diff(spikes) > 0)
    finally:
        io.close()


@pytest.mark.parametrize("name", ["poisson", "lognormal"])
def test_export_then_import_reproduces_the_recording(kept, exported, name):
    recording = kept[name]
    imported = simlab.import_nwb(exported[name])
    assert problems(imported) == []
    assert list(imported["subject"].values) == list(recording["subject"].values)
    for coord in ("learning_rule", "architecture", "seed", "layer_name", "n_units", "n_recorded", "step"):
        np.testing.assert_array_equal(imported[coord].values, recording[coord].values)
    np.testing.assert_allclose(imported["fraction"].values, recording["fraction"].values)
    a, b = recording["observation"].values, imported["observation"].values
    assert np.array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(b, a, rtol=2e-6, atol=1e-6)


def test_an_identifier_fitted_on_the_recording_predicts_the_imported_one_alike(kept, exported):
    recording = kept["poisson"]
    identifier = simlab.fit(recording, classifier={"name": "logistic_regression"}, folds=2)
    direct = simlab.predict(identifier, recording)
    imported = simlab.predict(identifier, simlab.import_nwb(exported["poisson"]))
    np.testing.assert_array_equal(imported["predicted"].values, direct["predicted"].values)
    assert imported.attrs["labels_known"] == 1


# --------------------------------------------------------------------------- experiments


def experiment_file(path, *, trials=True, units=True, epochs=True, rois=False, subject="mouse1", day=0):
    """A small experiment as a lab would write it: 2 electrode groups (V1: 3 units, LM: 2),
    2 stimuli shown twice per epoch (trials 1 s), 2 epochs; unit j of V1 fires j + 1 spikes per
    trial of stimulus 0 and 2 (j + 1) of stimulus 1 in epoch 0, one more spike in epoch 1."""
    import datetime

    from pynwb.file import Subject

    nwb = pynwb.NWBFile(session_description="an experiment", identifier=f"{subject}-{day}",
                        session_start_time=datetime.datetime(2025, 1, 1 + day, tzinfo=datetime.timezone.utc))
    nwb.subject = Subject(subject_id=subject, species="Mus musculus", sex="F", age="P60D")
    starts = [0.0, 2.0, 4.0, 6.0, 20.0, 22.0, 24.0, 26.0]
    stimuli = ["grating", "dots", "grating", "dots"] * 2
    if epochs:
        nwb.add_epoch(start_time=0.0, stop_time=10.0, tags=["day1"])
        nwb.add_epoch(start_time=20.0, stop_time=30.0, tags=["day2"])
    if trials:
        nwb.add_trial_column("stimulus", "stimulus shown")
        for start, stimulus in zip(starts, stimuli):
            nwb.add_trial(start_time=start, stop_time=start + 1.0, stimulus=stimulus)
    device = nwb.create_device(name="probe")
    if units:
        nwb.add_unit_column("quality", "curation label")
        for area, n in (("V1", 3), ("LM", 2)):
            group = nwb.create_electrode_group(name=area, description=area, location=area, device=device)
            for j in range(n):
                times = []
                for start, stimulus in zip(starts, stimuli):
                    count = (j + 1) * (1 if stimulus == "grating" else 2) + (start >= 20)
                    times.extend(start + 0.1 + 0.8 * np.arange(count) / count)
                nwb.add_unit(spike_times=np.array(times), electrode_group=group,
                             quality="good" if j < 2 else "mua")
    if rois:
        from pynwb.ophys import ImageSegmentation, OpticalChannel, RoiResponseSeries

        module = nwb.create_processing_module(name="ophys", description="imaging")
        segmentation = ImageSegmentation()
        module.add(segmentation)
        plane = nwb.create_imaging_plane(name="plane", optical_channel=OpticalChannel(name="ch", description="green", emission_lambda=500.0),
                                         description="V1 plane", device=device, excitation_lambda=900.0,
                                         indicator="GCaMP6f", location="V1")
        table = segmentation.create_plane_segmentation(name="rois", description="ROIs", imaging_plane=plane)
        for k in range(3):
            table.add_roi(pixel_mask=[(k, 0, 1.0)])
        times = np.arange(0, 30, 0.5)  # 2 samples per 1 s trial
        data = np.stack([np.where(np.isin(np.floor(times / 2) % 2, [1]), 2.0, 1.0) * (k + 1) for k in range(3)], 1)
        region = table.create_roi_table_region(region=[0, 1, 2], description="all")
        module.add(RoiResponseSeries(name="dff", data=data, rois=region, unit="a.u.", timestamps=times))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def observables_by_hand(matrix: np.ndarray) -> dict[str, float]:
    """A few activation observables of a [stimulus, unit] matrix with plain numpy."""
    return {
        "activation_raw_mean": float(matrix.mean(axis=1).mean()),
        "activation_raw_norm": float(np.sqrt((matrix**2).sum(axis=1)).mean()),
        "activation_raw_var": float(matrix.var(axis=1).mean()),
        "activation_sq_mean": float((matrix**2).mean(axis=1).mean()),
    }


def test_an_experiment_with_spike_times_imports_with_an_unknown_rule(tmp_path):
    path = experiment_file(tmp_path / "mouse1.nwb")
    recording = simlab.import_nwb(path)
    assert problems(recording) == []
    assert recording.sizes["session"] == 2 and list(recording["layer_name"].values[0]) == ["V1", "LM"]
    assert recording["learning_rule"].values[0] == "unknown"
    np.testing.assert_allclose(recording["fraction"].values, [0.0, 1.0])
    v1 = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])  # rows: dots, grating (sorted); Hz in 1 s trials
    v1 = v1[::-1]
    for session, matrix in enumerate([v1, v1 + 1]):
        for name, value in observables_by_hand(matrix).items():
            got = float(recording["observation"].sel(observable=name).values[0, 0, session])
            assert got == pytest.approx(value, rel=1e-6), (name, session)
    # the first half of each trial: spikes at 0.1 + 0.8 k / c s, so ceil(c / 2) of them, in 0.5 s
    half = simlab.import_nwb(path, window=(0.0, 0.5), rate_gain=2.0, units_where={"quality": "good"})
    assert list(half["n_recorded"].values[0]) == [2, 2]
    by_hand = np.array([[1.0, 2.0], [1.0, 1.0]])  # V1's good units, epoch 0: dots c = 2, 4; grating c = 1, 2
    assert float(half["observation"].sel(observable="activation_raw_mean").values[0, 0, 0]) == pytest.approx(
        by_hand.mean())
    assert half.attrs["rig"].count("rate_gain: 2.0") == 1
    wide = simlab.import_nwb(path, min_units=3)
    assert list(wide["layer_name"].values[0]) == ["V1"]  # LM has 2 units
    with pytest.raises(SimlabError, match="no site has 4 or more units"):
        simlab.import_nwb(path, min_units=4)


def test_an_experiment_over_days_in_files_and_with_roi_responses(tmp_path):
    days = [experiment_file(tmp_path / f"day{d}.nwb", epochs=False, day=d) for d in (1, 0)]
    recording = simlab.import_nwb(days, sessions="files", fractions=[0.0, 0.5])
    assert recording.sizes["session"] == 2 and recording.sizes["subject"] == 1
    np.testing.assert_allclose(recording["fraction"].values, [0.0, 0.5])
    # files of one epoch-less day hold both blocks of trials; day 0 comes first by session_start_time
    assert "day0.nwb" in recording["nwb_file"].values[0] or "day1.nwb" in recording["nwb_file"].values[0]
    rois = simlab.import_nwb(experiment_file(tmp_path / "rois.nwb", units=False, rois=True))
    matrix = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])  # grating trials at even seconds: 1x; dots 2x
    expected = observables_by_hand(matrix)
    for name, value in expected.items():
        assert float(rois["observation"].sel(observable=name).values[0, 0, 0]) == pytest.approx(value, rel=1e-6)
    tagged = simlab.import_nwb(tmp_path / "rois.nwb", epoch_tags=["day2"])
    assert tagged.sizes["session"] == 1


@pytest.mark.parametrize("kind, message", [
    ({"trials": False}, "no trials"),
    ({"units": False}, "no units"),
])
def test_a_file_lacking_trials_or_units_is_refused_naming_what_is_missing(tmp_path, kind, message):
    path = experiment_file(tmp_path / "bad.nwb", **kind)
    with pytest.raises(SimlabError, match=message) as error:
        simlab.import_nwb(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_sessions_that_are_missing_or_unequal_are_refused(tmp_path):
    flat = experiment_file(tmp_path / "flat.nwb", epochs=False)
    with pytest.raises(SimlabError, match="no sessions: the file has no epochs"):
        simlab.import_nwb(flat, sessions="epochs")
    with pytest.raises(SimlabError, match="no sessions: no epoch has a tag"):
        simlab.import_nwb(experiment_file(tmp_path / "tags.nwb"), epoch_tags=["day9"])
    other = experiment_file(tmp_path / "other.nwb", subject="mouse2")
    with pytest.raises(SimlabError, match="different numbers of sessions"):
        simlab.import_nwb([flat, other])


@pytest.mark.parametrize("sampling", ["chronic", "acute"])
def test_a_synapse_rig_s_weights_are_a_table_per_site_with_a_column_per_session(tiny_run, tmp_path, sampling):
    recording = simlab.record(tiny_run, "synapse", units=7, sampling=sampling, noise=0.1, keep_units=True,
                              progress=False)
    i = recording.sizes["subject"] - 1  # a deep subject: three sites
    path = simlab.export_nwb(recording.isel(subject=[i]), tmp_path, progress=False)[0]
    nwbinspector = pytest.importorskip("nwbinspector")
    found = [m for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(path)) if m.importance.name in BAD]
    assert not found, [(m.importance.name, m.check_function_name, m.message) for m in found]
    io, nwb = read(path)
    try:
        assert nwb.trials is None  # a synapse rig shows no stimuli
        assert list(nwb.epochs.to_dataframe()["step"]) == list(recording["step"].values)
        tables = nwb.processing["synapses"].data_interfaces
        assert list(tables) == ["dense_0", "dense_1", "readout"]
        for layer, name in enumerate(tables):
            table = tables[name]
            index = recording["unit_index"].values[i, layer]  # chronic [unit]; acute [session, unit]
            weights = recording["unit_response"].values[i, layer]  # [session, unit]
            exported = np.asarray(table["weight"].data[:])  # [synapse, session]
            synapses = np.asarray(table["synapse_index"].data[:])
            for s in range(recording.sizes["session"]):
                recorded = index if index.ndim == 1 else index[s]
                rows = np.searchsorted(synapses, recorded)
                np.testing.assert_array_equal(synapses[rows], recorded)
                np.testing.assert_array_equal(exported[rows, s], weights[s])
                others = np.setdiff1d(np.arange(len(synapses)), rows)
                assert np.isnan(exported[others, s]).all()  # not recorded that session (acute)
            if sampling == "chronic":
                assert len(synapses) == 7
    finally:
        io.close()


def test_the_commands_export_and_import(kept, tmp_path, capsys):
    from simlab.cli.main import main
    from simlab.recording.contract import write_recording

    two = kept["poisson"].isel(subject=[0, -1])  # a shallow and a deep subject
    source = write_recording(two, tmp_path / "ephys.nc")
    assert main(["export", str(source), "--nwb", str(tmp_path / "nwb"), "--quiet"]) == 0
    assert main(["import-nwb", str(tmp_path / "nwb"), "--out", str(tmp_path / "back.nc"), "--quiet"]) == 0
    with xr.open_dataset(tmp_path / "back.nc") as back:
        back = back.load().sel(subject=two["subject"].values)  # files are read in name order
        np.testing.assert_allclose(back["observation"].values, two["observation"].values, rtol=2e-6, atol=1e-6)
    assert main(["import-nwb", str(tmp_path / "nwb"), "--out", str(tmp_path / "back.nc"), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "back.nc"), "--nwb", str(tmp_path / "again")]) == 2
    assert "no unit responses" in capsys.readouterr().err


def test_without_pynwb_simlab_imports_and_nwb_says_how_to_install():
    code = (
        "import sys; sys.modules['pynwb'] = None\n"
        "import simlab\n"
        "try:\n"
        "    simlab.import_nwb('x.nwb')\n"
        "except simlab.SimlabError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'simlab[nwb]'" in done.stdout


def test_the_rig_an_experiment_is_taken_to_match_is_stored_for_predict(tmp_path):
    import yaml

    rig = tmp_path / "matched.yaml"
    rig.write_text("type: electrophysiology\nunits: 3\nnoise_model: poisson\nrate_gain: 20\ncount_window: 1.0\n")
    recording = simlab.import_nwb(experiment_file(tmp_path / "mouse1.nwb"), rig=rig, rate_gain=20.0)
    stored = yaml.safe_load(recording.attrs["rig"])
    assert (stored["units"], stored["noise_model"], stored["count_window"], stored["measure"]) == (3, "poisson", 1.0,
                                                                                                   "activation")
    assert stored["nwb_import"]["files"] == [str(tmp_path / "mouse1.nwb")]
    with pytest.raises(SimlabError, match="not an import setting"):
        simlab.import_nwb(tmp_path / "mouse1.nwb", windows=(0, 1))
