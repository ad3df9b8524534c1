"""Every notebook in analyses/ runs from top to bottom on a tiny run, so none can rot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "analyses").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "analyses/ holds no notebook"


@pytest.fixture(scope="module")
def notebook_run(tiny_run, tmp_path_factory) -> Path:
    """One copy of the tiny run for all notebooks: the robustness notebooks cache their
    re-recordings in it (claims 4 and 5 share them), and the shared tiny run stays untouched."""
    copy = tmp_path_factory.mktemp("notebook-run") / tiny_run.name
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_a_tiny_run(path, notebook_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLAB_RUN", str(notebook_run))
    monkeypatch.setenv("SIMLAB_FIGURES", str(tmp_path))
    monkeypatch.setenv("SIMLAB_TOUR_RUN", str(tmp_path / "tour"))  # the Python tour trains its own run
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" for o in outputs), "the notebook drew no figure"
