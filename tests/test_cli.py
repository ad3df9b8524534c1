"""The ``simlab`` command: help, validate, run, record, identify, info, and its user errors.

Most tests call ``simlab.cli.main(argv)`` in-process (fast); a few run the installed command
in a subprocess to see its real exit status and stderr. A user's mistake ends with exit
status 2 and a short message, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from simlab.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SIMLAB = Path(sys.executable).with_name("simlab")  # the virtualenv's console script
if not SIMLAB.exists():
    SIMLAB = Path(shutil.which("simlab") or SIMLAB)
RIGS = ("synapse", "electrophysiology", "paired")

# five mistakes, one per line, at known lines
BAD_PROTOCOL = """\
name: bad protocol
cohort:
  architecture: [mlp]
  task: [digits]
  learning_rule: [sgdm, nonsense_rule]
  batch_size: [0]
training:
  steps: -5
  bogus: 1
"""
BAD_LINES = {
    1: "name",
    5: "nonsense_rule",
    6: "batch_size",
    8: "steps",
    9: "bogus",
}


def simlab(*args, cwd=None) -> subprocess.CompletedProcess:
    """The installed ``simlab`` command, as a user runs it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [str(SIMLAB), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def exit_code(argv) -> int:
    """``main(argv)``'s exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code


@pytest.fixture
def bad_protocol(tmp_path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_PROTOCOL)
    return path


# --------------------------------------------------------------------------- help


def test_installed_command_help():
    result = simlab("--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "record", "identify", "validate", "info"):
        assert command in result.stdout
    assert "examples:" in result.stdout


def test_python_dash_m_simlab_help():
    result = subprocess.run(
        [sys.executable, "-m", "simlab", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage: simlab" in result.stdout


@pytest.mark.parametrize(
    "command, options",
    [
        ("run", ["protocol", "--out", "--force", "--quiet"]),
        ("record", ["RUN_DIR", "--rig", "--units", "--noise", "--seed", "--out", "--force", "--quiet"]),
        ("identify", ["FILE", "--out", "--splits", "--target", "--group-by", "--force", "--quiet"]),
        ("validate", ["protocol"]),
        ("info", ["path"]),
    ],
)
def test_subcommand_help_lists_its_options(command, options, capsys):
    assert exit_code([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: simlab {command}")
    for option in options:
        assert option in out, option


def test_version(capsys):
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out.startswith("simlab ")


@pytest.mark.parametrize("argv", [[], ["frobnicate"]])
def test_missing_or_unknown_command_is_a_usage_error(argv, capsys):
    assert exit_code(argv) == 2
    assert "usage: simlab" in capsys.readouterr().err


# --------------------------------------------------------------------------- validate


def test_validate_a_valid_protocol_prints_the_cohort(tiny_protocol, capsys):
    assert exit_code(["validate", tiny_protocol]) == 0
    out = capsys.readouterr().out
    assert f"{tiny_protocol}: valid" in out
    assert "12 subjects" in out
    assert "4 sessions at steps 0, 10, 20, 30" in out


def test_validate_the_shipped_tiny_protocol(capsys):
    assert exit_code(["validate", ROOT / "protocols" / "tiny.yaml"]) == 0
    assert "8 subjects" in capsys.readouterr().out


def test_validate_reports_every_error_with_file_and_line(bad_protocol, capsys):
    assert exit_code(["validate", bad_protocol]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert f"{len(BAD_LINES)} problems" in lines[0]
    for line_number, word in BAD_LINES.items():
        matching = [line for line in lines if line.startswith(f"{bad_protocol}:{line_number}: ")]
        assert len(matching) == 1, (line_number, captured.err)
        assert word in matching[0]
    assert "Traceback" not in captured.err


def test_validate_errors_from_the_installed_command(bad_protocol):
    result = simlab("validate", bad_protocol.name, cwd=bad_protocol.parent)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for line_number in BAD_LINES:
        assert f"bad.yaml:{line_number}: " in result.stderr


def test_validate_a_missing_file_is_one_line_without_traceback(tmp_path):
    result = simlab("validate", tmp_path / "nowhere.yaml")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere.yaml" in lines[0], result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{tmp}/nowhere.yaml", "--out", "{tmp}/out"],
        ["info", "{tmp}/nowhere"],
        ["record", "{tmp}/nowhere", "--rig", "synapse"],
        ["identify", "{tmp}/nowhere.nc", "--out", "{tmp}/results.nc"],
    ],
)
def test_missing_inputs_are_one_line_errors(argv, tmp_path, capsys):
    assert exit_code([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0], err
    assert lines[0].startswith(f"simlab {argv[0]}: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


# --------------------------------------------------------------------------- run


def test_run_refuses_an_invalid_protocol_before_creating_a_run_directory(bad_protocol, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert exit_code(["run", bad_protocol, "--out", out, "--quiet"]) == 2
    assert exit_code(["run", bad_protocol, "--quiet"]) == 2  # default: runs/<name>
    err = capsys.readouterr().err
    assert f"{bad_protocol}:5: " in err
    assert not out.exists()
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_run_refuses_a_directory_holding_another_protocol(tiny_run, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text((ROOT / "protocols" / "tiny.yaml").read_text())
    before = sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*"))
    assert exit_code(["run", other, "--out", tiny_run, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and str(tiny_run) in err
    assert sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*")) == before


# --------------------------------------------------------------------------- record: user errors


def test_record_an_unknown_rig_lists_the_known_ones(tiny_run, capsys):
    assert exit_code(["record", tiny_run, "--rig", "ephys", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "'ephys'" in err
    for rig in RIGS:
        assert rig in err


@pytest.mark.parametrize(
    "units, says",
    [
        ("abc", "expected 'all', a count or a fraction"),  # not a number: argparse's usage error
        ("0", "--units"),
        ("1.5", "--units"),
        ("-0.5", "--units"),
    ],
)
def test_record_a_bad_units_value_is_an_error(tiny_run, units, says, capsys):
    assert exit_code(["record", tiny_run, "--rig", "synapse", f"--units={units}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert says in err and units in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (tiny_run / "recordings").iterdir()) == sorted(f"{r}.nc" for r in RIGS)


def test_record_a_negative_noise_is_an_error(tiny_run, capsys):
    assert exit_code(["record", tiny_run, "--rig", "synapse", "--noise=-1", "--quiet"]) == 2
    assert "--noise" in capsys.readouterr().err


def test_record_in_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert exit_code(["record", tmp_path, "--rig", "synapse"]) == 2
    assert "not a simlab run directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- identify


def test_identify_prints_a_table_and_writes_results(tiny_run_copy, capsys):
    recordings = [tiny_run_copy / "recordings" / f"{rig}.nc" for rig in RIGS]
    argv = ["identify", *recordings, "--splits", "2", "--quiet"]
    assert exit_code(argv) == 0
    out = capsys.readouterr().out
    for word in ("chance", "feature_set", "weight", "activation", "activity_change", "random_forest", "linear_svm"):
        assert word in out, word
    assert "identify learning_rule: 2 classes" in out

    # under the run's analyses/, never beside the recordings (where globs would take it for one)
    results_path = tiny_run_copy / "analyses" / "identify-synapse+electrophysiology+paired.nc"
    assert f"wrote {results_path}" in out
    assert sorted(p.name for p in (tiny_run_copy / "recordings").iterdir()) == sorted(f"{rig}.nc" for rig in RIGS)
    results = xr.open_dataset(results_path).load()
    assert results.attrs["chance"] == 0.5
    assert results["accuracy"].sizes == {"classifier": 2, "feature_set": 4, "split": 2}
    assert ((results["accuracy"] >= 0) & (results["accuracy"] <= 1)).all()
    assert results_path.with_suffix(".txt").read_text().strip() in out

    # an existing results file is kept without --force
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert str(results_path) in err and "--force" in err


def test_identify_a_run_directory_uses_its_rigs_and_writes_its_identify_result(tiny_run_copy, capsys):
    (tiny_run_copy / "analyses" / "identify.nc").unlink()
    assert exit_code(["identify", tiny_run_copy, "--splits", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    results = xr.open_dataset(tiny_run_copy / "analyses" / "identify.nc").load()
    assert results["accuracy"].sizes["split"] == 2  # the flag over the protocol's settings
    assert {"weight", "activation", "activity_change", "all"} <= set(results["feature_set"].values)
    assert f"wrote {tiny_run_copy / 'analyses' / 'identify.nc'}" in out


def test_identify_outside_a_run_writes_beside_the_file(tiny_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "synapse.nc"
    shutil.copy(tiny_run / "recordings" / "synapse.nc", copy)
    assert exit_code(["identify", copy, "--splits", "2", "--quiet"]) == 0
    assert (tmp_path / "synapse.identify.nc").is_file() and (tmp_path / "synapse.identify.txt").is_file()


def test_identify_with_two_subjects_per_rule_gives_a_result_or_a_clear_error(tiny_run, tmp_path, capsys):
    import numpy as np

    from simlab.recording.contract import open_recording, write_recording

    ds = open_recording(tiny_run / "recordings" / "synapse.nc")
    keep = (ds["architecture"].values == "shallow") & (ds["seed"].values < 2)  # 2 subjects per rule
    small = tmp_path / "small.nc"
    write_recording(ds.isel(subject=np.flatnonzero(keep)), small)
    code = exit_code(["identify", small, "--splits", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 or (code == 2 and len(err.strip().splitlines()) == 1), err


def test_identify_refuses_a_file_that_is_not_a_recording(tiny_run, tmp_path, capsys):
    assert exit_code(["identify", tiny_run / "subjects.nc", "--out", tmp_path / "r.nc", "--quiet"]) == 2
    assert "not a simlab recording" in capsys.readouterr().err
    assert not (tmp_path / "r.nc").exists()


def test_identify_bad_splits_is_an_error(tiny_run, tmp_path, capsys):
    recording = tiny_run / "recordings" / "synapse.nc"
    assert exit_code(["identify", recording, "--splits", "0", "--out", tmp_path / "r.nc"]) == 2
    assert "--splits" in capsys.readouterr().err


# --------------------------------------------------------------------------- info


def test_info_on_a_run_directory(tiny_run, capsys):
    assert exit_code(["info", tiny_run]) == 0
    out = capsys.readouterr().out
    assert "run of protocol 'tiny-test'" in out
    assert "12 subjects in 4 populations; 4 populations trained" in out
    assert "recordings: electrophysiology.nc, paired.nc, synapse.nc" in out
    assert "final test accuracy" in out
    assert "analysis identify" in out and "chance" in out


@pytest.mark.parametrize("rig, observables", [("synapse", 21), ("electrophysiology", 21), ("paired", 3)])
def test_info_on_a_recording(tiny_run, rig, observables, capsys):
    assert exit_code(["info", tiny_run / "recordings" / f"{rig}.nc"]) == 0
    out = capsys.readouterr().out
    assert f"12 subjects x 3 layers x 4 sessions x {observables} observables" in out
    assert "contract: conforms" in out
    assert "learning_rule: feedback_alignment (6), sgdm (6)" in out


def test_info_on_identification_results(tiny_run, capsys):
    assert exit_code(["info", tiny_run / "analyses" / "identify.nc"]) == 0
    out = capsys.readouterr().out
    assert "identification results" in out
    assert "chance" in out and "0.500" in out


def test_info_on_the_subject_table(tiny_run, capsys):
    assert exit_code(["info", tiny_run / "subjects.nc"]) == 0
    out = capsys.readouterr().out
    assert "subject table" in out
    assert out.count(" ok") >= 12


@pytest.mark.parametrize("content", [b"not netcdf at all\n", None])
def test_info_on_a_file_simlab_did_not_write(tmp_path, content, capsys):
    path = tmp_path / "other.nc"
    if content is None:  # a NetCDF file of someone else's
        xr.Dataset({"x": ("t", [1.0, 2.0])}).to_netcdf(path)
    else:
        path.write_bytes(content)
    assert exit_code(["info", path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(path) in err
