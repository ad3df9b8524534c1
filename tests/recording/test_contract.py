"""The recording data contract: what build_recording makes is what a NetCDF file holds."""

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import simlab
from simlab.errors import SimlabError
from simlab.recording.contract import (
    SCHEMA,
    build_recording,
    combine_recordings,
    depth_groups,
    open_recording,
    problems,
    write_recording,
)
from simlab.recording.observables import observables_for

LAYER_NAMES = np.array(
    [
        ["dense_0", "dense_1", "dense_2", "readout"],
        ["dense_0", "readout", "", ""],
        ["conv_0", "conv_1", "dense_0", "readout"],
    ]
)
STEPS = [0, 50, 100]
RIGS = {
    "weight": {"type": "synapse", "units": "all", "noise": 0.0, "seed": 0},
    "activation": {"type": "electrophysiology", "units": 0.5, "noise": 0.1, "seed": 3},
    "activity_change": {"type": "paired", "units": "all", "noise": 0.0, "seed": 1},
}


def make_recording(measure="weight", seed=0, **overrides):
    """Three subjects of 4, 2 and 4 layers, so subject 1 is NaN-padded."""
    observables = observables_for(measure)
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(3, 4, len(STEPS), len(observables))).astype(np.float32)
    pad = LAYER_NAMES == ""
    data[pad] = np.nan
    width = 10 if measure == "weight" else 5
    kwargs = dict(
        subject_ids=["s0", "s1", "s2"],
        subject_coords={
            "learning_rule": ["sgdm", "adam", "feedback"],
            "architecture": ["mlp", "mlp", "cnn"],
            "task": ["mnist1d"] * 3,
            "batch_size": [32, 64, 32],
            "seed": [0, 1, 2],
            "final_accuracy": [0.81, 0.77, np.nan],
            "status": ["ok", "ok", "diverged"],
            "learning_rate": [0.1, 0.01, 0.1],
        },
        layer_coords={
            "layer_name": LAYER_NAMES,
            "n_units": np.where(pad, 0, width * 2),
            "n_recorded": np.where(pad, 0, width),
        },
        steps=STEPS,
        total_steps=100,
        observables=observables,
        protocol_text="name: test\ncohort: {}\n",
        rig_settings=RIGS[measure],
        title=f"{measure} recording",
        history="2024-01-01T00:00:00Z simlab run test.yaml",
    )
    kwargs.update(overrides)
    return build_recording(data, **kwargs), data


@pytest.fixture
def written(tmp_path):
    ds, data = make_recording()
    path = tmp_path / "weight.nc"
    write_recording(ds, path)
    return path, ds, data


def test_depth_groups_are_thirds_by_index():
    assert depth_groups(0) == []
    assert depth_groups(1) == ["early"]
    assert depth_groups(2) == ["early", "middle"]
    assert depth_groups(3) == ["early", "middle", "deep"]
    assert depth_groups(4) == ["early", "early", "middle", "deep"]
    assert depth_groups(5) == ["early", "early", "middle", "middle", "deep"]
    # a contrastive subject's projection head is deep; the backbone is split in thirds
    names = ["dense_0", "dense_1", "dense_2", "projection_0", "projection_1"]
    assert depth_groups(5, names) == ["early", "middle", "deep", "deep", "deep"]
    assert depth_groups(7) == ["early"] * 3 + ["middle"] * 2 + ["deep"] * 2


def test_built_recording_conforms():
    ds, data = make_recording()
    assert problems(ds) == []
    assert ds["observation"].dtype == np.float32
    np.testing.assert_array_equal(ds["observation"].values, data)


def test_round_trip_keeps_every_dim_coord_attr_and_value(written):
    path, built, data = written
    ds = open_recording(path)
    assert problems(ds) == []
    assert problems(path) == []

    obs = ds["observation"]
    assert obs.dims == ("subject", "layer", "session", "observable")
    assert obs.dtype == np.float32
    assert obs.attrs["long_name"] and obs.attrs["units"] == "1"
    np.testing.assert_array_equal(obs.values, data)  # exact, NaN padding included
    assert np.isnan(obs.sel(subject="s1", layer=[2, 3])).all()
    assert not np.isnan(obs.sel(subject="s1", layer=[0, 1])).any()

    assert list(ds["subject"].values) == ["s0", "s1", "s2"]
    assert list(ds["layer"].values) == [0, 1, 2, 3]
    for name in ("learning_rule", "architecture", "task", "batch_size", "seed", "status", "learning_rate"):
        assert ds[name].dims == ("subject",)
        assert list(ds[name].values) == list(built[name].values)
    np.testing.assert_array_equal(ds["final_accuracy"].values, [0.81, 0.77, np.nan])
    for name in ("layer_name", "depth", "n_units", "n_recorded"):
        assert ds[name].dims == ("subject", "layer")
    assert ds["layer_name"].values.tolist() == LAYER_NAMES.tolist()
    assert ds["depth"].values.tolist() == [
        ["early", "early", "middle", "deep"],
        ["early", "middle", "", ""],
        ["early", "early", "middle", "deep"],
    ]
    assert ds["n_units"].values.tolist() == [[20] * 4, [20, 20, 0, 0], [20] * 4]
    assert ds["n_recorded"].values.tolist() == [[10] * 4, [10, 10, 0, 0], [10] * 4]
    assert ds["step"].dims == ("session",) and list(ds["step"].values) == STEPS
    np.testing.assert_array_equal(ds["fraction"].values, [0.0, 0.5, 1.0])
    names = [o.name for o in observables_for("weight")]
    assert list(ds["observable"].values) == names
    assert set(ds["measure"].values) == {"weight"}
    assert list(ds["function"].values[:8]) == ["raw"] * 7 + ["abs"]
    assert list(ds["statistic"].values[:2]) == ["norm", "mean"]

    for name in ("subject", "learning_rule", "status", "layer_name", "depth", "observable", "measure"):
        assert all(type(v) in (str, np.str_) for v in ds[name].values.ravel()), name
    assert not any(isinstance(index, pd.MultiIndex) for index in ds.indexes.values())

    assert ds.attrs["schema"] == SCHEMA
    assert ds.attrs["simlab_version"] == simlab.__version__
    assert ds.attrs["protocol"] == "name: test\ncohort: {}\n"
    assert yaml.safe_load(ds.attrs["rig"]) == RIGS["weight"]
    assert ds.attrs["Conventions"] == "CF-1.11"
    assert ds.attrs["title"] == "weight recording"
    assert ds.attrs["history"].endswith("simlab run test.yaml")
    assert ds.attrs["created"].endswith("Z") and "T" in ds.attrs["created"]
    for value in ds.attrs.values():
        assert isinstance(value, str)


def test_strings_are_variable_length_in_the_file(written):
    path, _, _ = written
    with netCDF4.Dataset(path) as nc:
        for name in ("subject", "layer_name", "depth", "observable", "status"):
            assert nc.variables[name].dtype is str, name


def test_open_recording_is_in_memory_and_closed(written):
    path, _, data = written
    ds = open_recording(path)
    path.unlink()  # the file is closed: it can go, the data stays
    np.testing.assert_array_equal(ds["observation"].values, data)


def test_xarray_selection_by_name(written):
    ds = open_recording(written[0])
    median = ds["observation"].sel(observable="weight_abs_median")
    assert median.dims == ("subject", "layer", "session")
    by_rule = median.groupby("learning_rule").mean(...)
    assert set(by_rule["learning_rule"].values) == {"sgdm", "adam", "feedback"}
    last = ds["observation"].isel(session=-1).where(ds["depth"] == "deep", drop=True)
    assert last.sizes["layer"] == 1  # layer 3 is the only deep one (subject s1 has none)


def test_write_refuses_an_existing_file_without_force_and_leaves_no_temp_files(written, tmp_path):
    path, ds, _ = written
    before = path.read_bytes()
    with pytest.raises(SimlabError, match="already exists"):
        write_recording(ds, path)
    assert path.read_bytes() == before
    other, _ = make_recording(seed=1)
    write_recording(other, path, force=True)
    np.testing.assert_array_equal(open_recording(path)["observation"].values, other["observation"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weight.nc"]


def test_failed_write_leaves_nothing(tmp_path):
    ds, _ = make_recording()
    bad = ds.assign_attrs(title=None)
    with pytest.raises(ValueError, match="title"):
        write_recording(bad, tmp_path / "r.nc")
    assert list(tmp_path.iterdir()) == []


def test_open_recording_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.nc"
    with pytest.raises(SimlabError, match="missing.nc"):
        open_recording(missing)
    text = tmp_path / "notes.nc"
    text.write_text("not netcdf")
    with pytest.raises(SimlabError, match="notes.nc.*not a NetCDF"):
        open_recording(text)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"t": ("x", np.arange(3.0))}, attrs={"title": "climate"}).to_netcdf(foreign)
    with pytest.raises(SimlabError, match="foreign.nc.*not a simlab recording.*schema"):
        open_recording(foreign)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"subject_coords": {"learning_rule": ["a", "b", "c"]}}, "lacks required coordinates"),
        ({"subject_ids": ["s0", "s1"]}, "expected 3"),
        ({"subject_ids": ["s0", "s0", "s1"]}, "unique"),
        ({"steps": [0, 50]}, "steps"),
        ({"steps": [0, 100, 50]}, "increase"),
        ({"total_steps": 0}, "total_steps"),
        ({"observables": observables_for("weight")[:20]}, "expected 21"),
        ({"rig_settings": "synapse"}, "rig_settings"),
        ({"layer_coords": {"layer_name": LAYER_NAMES[:, :3], "n_units": 0, "n_recorded": 0}}, "shape"),
    ],
)
def test_build_recording_says_what_was_expected(override, message):
    with pytest.raises(ValueError, match=message):
        make_recording(**override)


def build_args(ds):
    """The keyword arguments that rebuild ``ds`` (a weight recording from make_recording)."""
    return dict(
        subject_ids=list(ds["subject"].values),
        subject_coords={
            n: ds[n].values for n, c in ds.coords.items() if c.dims == ("subject",) and n != "subject"
        },
        layer_coords={n: ds[n].values for n in ("layer_name", "n_units", "n_recorded")},
        steps=list(ds["step"].values),
        total_steps=100,
        observables=observables_for("weight"),
        protocol_text=ds.attrs["protocol"],
        rig_settings=yaml.safe_load(ds.attrs["rig"]),
        title=ds.attrs["title"],
        history=ds.attrs["history"],
    )


def test_build_recording_rejects_bad_values():
    ds, data = make_recording()
    base = build_args(ds)
    assert problems(build_recording(data, **base)) == []
    subject = base["subject_coords"]
    for extra, message in [
        ({"status": ["ok", "bad", "ok"]}, "status"),
        ({"pretrained": [True, False, True]}, "booleans"),
        ({"width": [1, None, 2]}, "None"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_recording(data, **dict(base, subject_coords=dict(subject, **extra)))
    filled = data.copy()
    filled[1, 3] = 1.0  # subject s1 has 2 layers: layer 3 is padding
    with pytest.raises(ValueError, match="padding"):
        build_recording(filled, **base)
    with pytest.raises(ValueError, match="derived"):
        build_recording(data, **dict(base, layer_coords=dict(base["layer_coords"], depth=LAYER_NAMES)))


def test_values_that_are_not_finite_are_stored_as_nan():
    ds, data = make_recording()
    data[0, 0, 0, :2] = [np.inf, -np.inf]
    out = build_recording(data, **build_args(ds))
    assert np.isnan(out["observation"].values[0, 0, 0, :2]).all()


def test_problems_reports_contract_breaks():
    ds, _ = make_recording()
    assert problems(ds.drop_vars("depth")) == ["missing coordinate depth (on subject+layer)"]
    assert any("float32" in p for p in problems(ds.assign(observation=ds["observation"].astype("float64"))))
    assert any("schema" in p for p in problems(ds.assign_attrs(schema="other/1")))
    assert any("status" in p for p in problems(ds.assign_coords(status=("subject", ["ok", "x", "ok"]))))
    renamed = ds.assign_coords(observable=("observable", ["w"] + list(ds["observable"].values[1:])))
    assert any("should be named" in p for p in problems(renamed))
    assert any("bool" in p for p in problems(ds.assign_attrs(flag=True)))
    assert problems(ds.drop_vars("observation")) == ["no data variable 'observation'"]


def test_combine_recordings_concatenates_along_observable(tmp_path):
    weight, wdata = make_recording("weight", seed=0)
    activation, adata = make_recording("activation", seed=1)
    change, cdata = make_recording("activity_change", seed=2)
    both = combine_recordings([weight, activation, change])
    assert problems(both) == []
    assert both.sizes["observable"] == 21 + 21 + 3
    np.testing.assert_array_equal(both["observation"].sel(observable=weight["observable"]).values, wdata)
    np.testing.assert_array_equal(both["observation"].sel(observable=change["observable"]).values, cdata)
    assert list(both["measure"].values) == ["weight"] * 21 + ["activation"] * 21 + ["activity_change"] * 3
    assert "n_units" not in both.coords
    assert both["n_units_weight"].values.tolist() == weight["n_units"].values.tolist()
    assert both["n_recorded_activation"].values.tolist() == activation["n_recorded"].values.tolist()
    assert both["n_recorded_activity_change"].dims == ("subject", "layer")
    assert yaml.safe_load(both.attrs["rig"]) == [RIGS["weight"], RIGS["activation"], RIGS["activity_change"]]
    assert list(both["depth"].values[1]) == ["early", "middle", "", ""]

    path = tmp_path / "all.nc"
    write_recording(both, path)
    back = open_recording(path)
    assert problems(back) == []
    xr.testing.assert_identical(back["observation"], both["observation"])

    again = combine_recordings([combine_recordings([weight, activation]), change])
    assert yaml.safe_load(again.attrs["rig"]) == yaml.safe_load(both.attrs["rig"])
    np.testing.assert_array_equal(again["observation"].values, both["observation"].values)


def test_combine_keeps_counts_that_agree():
    first, _ = make_recording("weight")
    second, _ = make_recording("activity_change")
    second = second.assign_coords(n_units=first["n_units"], n_recorded=first["n_recorded"])
    both = combine_recordings([first, second])
    assert both["n_units"].values.tolist() == first["n_units"].values.tolist()
    assert problems(both) == []


def test_combine_refuses_mismatches():
    weight, _ = make_recording("weight")
    with pytest.raises(ValueError, match="more than one"):
        combine_recordings([weight, weight])
    activation, _ = make_recording("activation")
    with pytest.raises(ValueError, match="session"):
        combine_recordings([weight, activation.isel(session=[0, 1])])
    with pytest.raises(ValueError, match="subject"):
        combine_recordings([weight, activation.assign_coords(subject=["a", "b", "c"])])
    other_rule = activation.assign_coords(learning_rule=("subject", ["adam", "adam", "adam"]))
    with pytest.raises(ValueError, match="learning_rule"):
        combine_recordings([weight, other_rule])
    with pytest.raises(ValueError, match="protocol"):
        combine_recordings([weight, activation.assign_attrs(protocol="name: other\n")])
    with pytest.raises(ValueError, match="at least one"):
        combine_recordings([])
