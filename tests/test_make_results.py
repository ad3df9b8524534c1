"""docs/make_results.py rewrites exactly the tables of docs/results.md whose run it is given,
from that run's outputs, under a stamp with the command, the date and the machine."""

from __future__ import annotations

import datetime
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest
import xarray as xr

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def make_results():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "docs" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_results"] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    yield module
    del sys.modules["make_results"]


@pytest.fixture
def results_page(tmp_path) -> Path:
    page = tmp_path / "results.md"
    shutil.copy(ROOT / "docs" / "results.md", page)
    return page


def blocks(make_results, text: str) -> dict[str, str]:
    return {match["name"]: match["body"] for match in make_results.BLOCK.finditer(text)}


def test_the_page_has_every_table_the_script_makes(make_results):
    names = set(blocks(make_results, (ROOT / "docs" / "results.md").read_text()))
    assert set(make_results.tables()) <= names


def test_quickstart_table_is_regenerated_from_a_run(make_results, results_page, tiny_run):
    from simlab.analysis.identify import format_table

    before = blocks(make_results, results_page.read_text())
    code = make_results.main(["--results", str(results_page), "--quickstart", str(tiny_run)])
    assert code == 0
    after = blocks(make_results, results_page.read_text())

    assert after.keys() == before.keys()
    # the run's own identification table, as simlab identify prints it, inside a fence
    with xr.open_dataset(tiny_run / "analyses" / "identify.nc") as results:
        table = format_table(results.load())
    assert f"```\n{table.rstrip()}\n```" in after["quickstart"]
    assert "12 subjects, 30 sites" in after["quickstart"]  # the tiny run's, not the quickstart's
    # the stamp: the command that makes the run, today's date, the machine, the script's call
    stamp = after["quickstart"].split("\n\n", 1)[0]
    assert f"`simlab run protocols/quickstart.yaml --out {tiny_run}`" in stamp
    assert f"Measured {datetime.date.today().isoformat()}" in stamp
    assert re.search(r"\d+ CPUs, JAX \d", stamp)
    assert f"python docs/make_results.py --results {results_page} --quickstart {tiny_run}" in stamp
    # the tiny run has no identify-<target>.nc: that table, like every other, is kept
    for name in before.keys() - {"quickstart"}:
        assert after[name] == before[name], name


def test_text_outside_the_tables_is_kept(make_results, results_page, tiny_run):
    outside = make_results.BLOCK.sub("", results_page.read_text())
    make_results.main(["--results", str(results_page), "--quickstart", str(tiny_run)])
    assert make_results.BLOCK.sub("", results_page.read_text()) == outside


def test_targets_table_has_a_row_per_identify_file(make_results, tiny_run_copy):
    analyses = tiny_run_copy / "analyses"
    shutil.copy(analyses / "identify.nc", analyses / "identify-learning_rule.nc")
    shutil.copy(analyses / "identify.nc", analyses / "identify-optimizer.nc")  # target learning_rule: not a row
    table = make_results.targets_table(tiny_run_copy)
    with xr.open_dataset(analyses / "identify.nc") as results:
        expected = make_results.accuracy_cell(results.load(), "random_forest")
    lines = table.splitlines()
    assert lines[0] == "| target (chance) | random_forest | linear_svm |"
    assert len(lines) == 3 and lines[2].startswith("| learning_rule (0.50) | " + expected)


def test_health_table_is_the_run_subject_table(make_results, results_page, tiny_run):
    from simlab.info import health_table

    make_results.main(["--results", str(results_page), "--zoo", str(tiny_run)])
    zoo = blocks(make_results, results_page.read_text())["zoo"]
    with xr.open_dataset(tiny_run / "subjects.nc") as table:
        assert zoo.endswith(health_table(table.load()) + "\n")
    assert f"`simlab info {tiny_run} --health`" in zoo


def test_claims_table_quotes_each_notebook_verdict(make_results):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('setup')", outputs=[nbformat.v4.new_output("stream", name="stdout", text="setup\n")]),
        nbformat.v4.new_code_cell("...", outputs=[
            nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
            nbformat.v4.new_output("stream", name="stdout", text="loaded runs/x/analyses/identify.nc\n"),
            nbformat.v4.new_output("stream", name="stdout", text="weights 0.9 | 0.8\n"),
            nbformat.v4.new_output("stream", name="stdout", text="  replicates\n"),
        ]),
    ])
    text = make_results.verdict(notebook)
    assert text == "weights 0.9 | 0.8\n  replicates"
    table = make_results.claims_table([("1. A claim", "claim1_separability", text)])
    assert table.splitlines()[2] == "| 1. A claim | `claim1_separability.ipynb` | weights 0.9 \\| 0.8<br>replicates |"
    silent = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="printed no verdict"):
        make_results.verdict(silent)


def test_a_run_directory_is_required(make_results, results_page, tmp_path):
    with pytest.raises(SystemExit, match="not a simlab run directory"):
        make_results.main(["--results", str(results_page), "--zoo", str(tmp_path)])


def test_a_missing_results_page_is_refused_before_any_work(make_results, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "protocol.yaml").write_text("name: x\n")
    with pytest.raises(SystemExit, match="no such file"):
        make_results.main(["--results", str(tmp_path / "missing.md"), "--zoo", str(tmp_path / "run")])
