"""The Python API: run -> record -> identify from Python alone, the run object, and errors that
name parameters (the CLI shows its flags for the same errors)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import simlab
from simlab.errors import SimlabError, parameter

TINY_RIGS = ("synapse", "electrophysiology", "paired")  # the tiny protocol's default rigs


def quiet(*args, **kwargs) -> None:
    """An ``echo`` that prints nothing."""


def test_the_package_exports_the_api():
    assert set(simlab.__all__) >= {
        "load_protocol", "run", "open_run", "record", "identify", "generalize", "trajectory", "robustness",
        "confound", "plan", "importance", "summary", "save", "open_recording", "combine", "Run", "SimlabError",
    }
    for name in simlab.__all__:
        item = getattr(simlab, name)
        if callable(item) and not isinstance(item, type):
            doc = item.__doc__ or ""
            for section in ("Parameters", "Returns", "Examples"):
                assert section in doc or name in ("summary", "save"), (name, section)


def test_a_run_from_python_equals_the_run_directory(tiny_protocol, tiny_run, tmp_path):
    """simlab.run on a protocol object resumes nothing here: it trains afresh and gives the
    same subjects as the CLI-made fixture (same protocol, same seeds)."""
    protocol = simlab.load_protocol(tiny_protocol)
    run = simlab.run(protocol, tmp_path / "again", progress=False, echo=quiet)
    assert isinstance(run, simlab.Run)
    reference = simlab.open_run(tiny_run)
    np.testing.assert_array_equal(run.subjects["final_accuracy"].values, reference.subjects["final_accuracy"].values)
    assert sorted(run.recordings) == sorted(TINY_RIGS)
    xr.testing.assert_identical(
        run.recordings["synapse"].drop_attrs(), reference.recordings["synapse"].drop_attrs()
    )


def test_open_run_exposes_every_stage(tiny_run):
    run = simlab.open_run(tiny_run)
    assert run.protocol.name == "tiny-test"
    assert run.subjects.sizes["subject"] == 12
    assert set(run.snapshots) == {pop.id for pop in simlab.protocol.plan_cohort(run.protocol).populations}
    assert "identify" in run.analyses and "accuracy" in run.analyses["identify"]
    with pytest.raises(KeyError, match="no recording 'calcium'"):
        run.recordings["calcium"]
    assert "recordings: electrophysiology, paired, synapse" in repr(run)


def test_record_returns_a_recording_and_writes_only_when_asked(tiny_run_copy):
    run = simlab.open_run(tiny_run_copy)
    before = set(run.recording_files())
    ephys = simlab.record(run, "electrophysiology", units=4, noise=0.5, progress=False)
    assert set(run.recording_files()) == before  # nothing written
    assert ephys.attrs["schema"].startswith("simlab.recording")
    assert int(ephys["n_recorded"].max()) == 4

    written = simlab.record(run, "electrophysiology", units=4, noise=0.5, progress=False, write=True)
    path = written.encoding["source"]
    assert path.endswith("recordings/electrophysiology-units4-noise0.5.nc")
    xr.testing.assert_identical(simlab.open_recording(path).drop_attrs(), ephys.drop_attrs())

    # the protocol's rig unchanged: the very file simlab run wrote, refused without force
    with pytest.raises(SimlabError, match="force=True"):
        simlab.record(run, "synapse", progress=False, write=True)


def test_run_record_identify_from_python(tiny_run):
    run = simlab.open_run(tiny_run)
    ephys = simlab.record(run, "electrophysiology", units=8, progress=False)
    result = simlab.identify(ephys, splits=2, classifiers=["random_forest"])
    assert result["accuracy"].sizes == {"classifier": 1, "feature_set": 1, "split": 2}
    table = simlab.summary(result)
    assert "random_forest" in table and "activation" in table
    # a run stands for its rigs' recordings, combined
    combined = simlab.identify(run, splits=2, classifiers=["random_forest"], rigs=["synapse", "paired"])
    assert set(combined["feature_set"].values) == {"weight", "activity_change", "all"}


def test_settings_errors_name_the_parameter(tiny_run):
    with pytest.raises(SimlabError, match=r"^splits=0: Input should be greater than 0"):
        simlab.identify(tiny_run, splits=0)
    with pytest.raises(SimlabError, match=r"^split: not a setting here; expected one of .*splits"):
        simlab.identify(tiny_run, split=2)
    with pytest.raises(SimlabError, match=r"units=0: a unit count must be >= 1"):
        simlab.record(tiny_run, "synapse", units=0)
    # an analysis's own settings and its identification settings, flattened
    with pytest.raises(SimlabError, match=r"^caliper=-1: Input should be greater than 0"):
        simlab.confound(tiny_run, caliper=-1, splits=2)


def test_analyses_take_and_return_xarray(tiny_run):
    run = simlab.open_run(tiny_run)
    held_out = simlab.generalize(run, "architecture", matrix=False, splits=2, classifiers=["random_forest"])
    assert isinstance(held_out, xr.Dataset) and held_out.attrs["schema"].startswith("simlab.generalization")
    assert "generalization" in simlab.summary(held_out).lower() or "held-out" in simlab.summary(held_out).lower()
    early = simlab.trajectory(run.recordings["synapse"],
                              {"early": {"window": (0.0, 0.5)}}, splits=2, classifiers=["random_forest"])
    assert "early" in early["access"].values


def test_parameter_marks_read_as_python_or_as_flags():
    error = SimlabError(f"x exists; pass {parameter('force', True)} or another {parameter('out')}")
    assert str(error) == "x exists; pass force=True or another out"
    assert error.message({"force": "--force", "out": "--out"}) == "x exists; pass --force or another --out"
    valued = SimlabError(f"{parameter('units', 2000)}: more than the site has")
    assert valued.message({"units": "--units"}) == "--units 2000: more than the site has"
    assert valued.message({}) == "units=2000: more than the site has"


def test_a_protocol_text_is_parsed_once(tiny_run, monkeypatch):
    from simlab import rundir

    calls = []
    original = rundir.parse_protocol
    monkeypatch.setattr(rundir, "parse_protocol", lambda *a, **k: calls.append(1) or original(*a, **k))
    rundir._parsed.cache_clear()
    run = simlab.open_run(tiny_run)
    for _ in range(3):
        run.protocol
    simlab.open_run(tiny_run).protocol
    assert len(calls) == 1


def test_import_simlab_stays_light_until_a_registry_is_read():
    """``import simlab`` (and so ``simlab --help``) imports neither JAX nor scikit-learn; the
    built-in rules, rigs, architectures and analyses register when a registry is first read."""
    import subprocess
    import sys

    code = (
        "import sys, simlab\n"
        "assert 'jax' not in sys.modules and 'sklearn' not in sys.modules, 'heavy import at start-up'\n"
        "from simlab.registry import RULES\n"
        "assert list(RULES)[:2] == ['sgdm', 'adam'] and 'jax' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
