"""The learning-health table of ``simlab info --health``, on a subject table made by hand."""

import numpy as np
import xarray as xr

from simlab.cli.main import main
from simlab.info import health_table
from simlab.specs.analyses import HealthSpec

PROTOCOL_WITH_MIN_GAIN = """\
name: health-margin
cohort: {architecture: [mlp], task: [digits], learning_rule: [sgdm, adam], batch_size: [16]}
analyses:
  identify: {health: {min_gain: 0.65}}
"""


def _table():
    rules = ["sgdm", "sgdm", "adam", "adam", "sgdm", "adam"]
    archs = ["mlp", "mlp", "mlp", "mlp", "knet", "knet"]
    tasks = ["digits", "digits", "digits", "digits", "teacher_simclr", "teacher_simclr"]
    accuracy = [0.9, 0.8, 0.7, 0.2, 0.4, 0.3]
    status = ["ok", "ok", "ok", "diverged", "ok", "ok"]
    metric = ["test_accuracy"] * 4 + ["probe_accuracy"] * 2
    coords = {
        "subject": [f"s{i}" for i in range(6)],
        "learning_rule": ("subject", rules),
        "architecture": ("subject", archs),
        "task": ("subject", tasks),
        "final_accuracy": ("subject", np.array(accuracy, np.float32)),
        "status": ("subject", status),
        "health_metric": ("subject", metric),
    }
    first = [0.1, 0.2, 0.3, 0.4, 0.5, 0.7]
    return xr.Dataset(
        {"test_accuracy": (("subject", "session"), np.stack([first, accuracy], axis=1))},
        coords={**coords, "session_step": ("session", [0, 100])},
    )


def test_health_table_means_ok_replicates_and_counts_diverged():
    lines = health_table(_table()).splitlines()
    assert lines[0] == "| rule | mlp / digits | knet / teacher_simclr * |"
    # (0.9 + 0.8) / 2; the probe subjects ended below their untrained 0.5 and 0.7: did not learn
    assert lines[2] == "| sgdm | 0.85 | 0.40 (1 did not learn) |"
    assert lines[3] == "| adam | 0.70 (1 diverged) | 0.30 (1 did not learn) |"  # the diverged replicate left out
    # step 0, every subject of the column, diverged or not: (0.1 + 0.2 + 0.3 + 0.4) / 4, (0.5 + 0.7) / 2
    assert lines[4] == "| *untrained (step 0)* | 0.25 | 0.60 |"
    assert "linear-probe accuracy" in lines[-1]


def test_health_table_has_no_untrained_row_without_a_session_at_step_0():
    table = _table().assign_coords(session_step=("session", [50, 100]))
    assert "untrained" not in health_table(table)


def test_info_health_on_a_run_directory(tmp_path, capsys):
    _table().to_netcdf(tmp_path / "subjects.nc")
    assert main(["info", str(tmp_path), "--health"]) == 0
    assert "| sgdm | 0.85 | 0.40 (1 did not learn) |" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nothing"), "--health"]) == 2
    assert "no subject table" in capsys.readouterr().err


def test_health_table_puts_the_longer_list_in_rows():
    """Three architecture / task pairs and two rules: the pairs become the rows."""
    table = _table()
    table = table.assign_coords(architecture=("subject", ["mlp", "mlp", "mlp", "mlp", "knet", "alexnet"]))
    lines = health_table(table).splitlines()
    assert lines[0] == "| architecture / task | sgdm | adam | *untrained (step 0)* |"
    assert lines[2] == "| mlp / digits | 0.85 | 0.70 (1 diverged) | 0.25 |"
    assert lines[3] == "| knet / teacher_simclr * | 0.40 (1 did not learn) |  | 0.50 |"
    assert lines[4] == "| alexnet / teacher_simclr * |  | 0.30 (1 did not learn) | 0.70 |"


def test_health_table_marks_the_subjects_that_did_not_learn_by_the_margin():
    """Gains over step 0 by hand: mlp/digits sgdm 0.8, 0.6; adam 0.4 (and one diverged); the
    probe subjects -0.1 and -0.4. A margin of 0.5 leaves adam's 0.4 short, 0.65 also sgdm's 0.6."""
    lines = health_table(_table(), HealthSpec(min_gain=0.5)).splitlines()
    assert lines[2] == "| sgdm | 0.85 | 0.40 (1 did not learn) |"
    assert lines[3] == "| adam | 0.70 (1 diverged, 1 did not learn) | 0.30 (1 did not learn) |"
    assert "less than 0.5 above the same subject's untrained value" in lines[6]
    assert "exclude them (health min_gain 0.5)" in lines[6]
    assert health_table(_table(), HealthSpec(min_gain=0.65)).splitlines()[2] == "| sgdm | 0.85 (1 did not learn) | 0.40 (1 did not learn) |"
    # a gain equal to the margin counts as learned: s0's 0.9 - 0.1 is 0.79999998 once 0.9 is float32
    assert health_table(_table(), HealthSpec(min_gain=0.8)).splitlines()[2] == "| sgdm | 0.85 (1 did not learn) | 0.40 (1 did not learn) |"


def test_health_table_marks_nothing_without_a_session_at_step_0():
    table = _table().assign_coords(session_step=("session", [50, 100]))
    assert "did not learn" not in health_table(table)


def test_info_health_min_gain_from_the_flag_else_the_protocol(tmp_path, capsys):
    _table().to_netcdf(tmp_path / "subjects.nc")
    assert main(["info", str(tmp_path), "--health", "--min-gain", "0.5"]) == 0
    assert "| adam | 0.70 (1 diverged, 1 did not learn) |" in capsys.readouterr().out
    (tmp_path / "protocol.yaml").write_text(PROTOCOL_WITH_MIN_GAIN)
    assert main(["info", str(tmp_path), "--health"]) == 0
    assert "exclude them (health min_gain 0.65)" in capsys.readouterr().out
