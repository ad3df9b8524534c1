"""Every command in the README runs as written, so the README cannot rot.

The shell blocks run in order with bash in a scratch directory holding the repository's
protocols/ and analyses/ (the README's commands start from the repository root), then the
Python blocks run in one interpreter there. The two install commands (install and run the
quickstart; install and run these tests) are what CI runs, line for line (`.ci/run`), so
they are checked here, not rerun.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(bash|python)\n(.*?)^```", README, flags=re.S | re.M)
INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install "


def shell_commands() -> list[str]:
    lines = [line for kind, text in BLOCKS if kind == "bash" for line in text.splitlines()]
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_the_readme_is_a_front_door():
    assert len(README) < 20_000
    assert [kind for kind, _ in BLOCKS].count("python") >= 1
    assert any(line.startswith("simlab run") for line in shell_commands())


def test_the_install_commands_are_what_ci_runs():
    installs = [line for line in shell_commands() if line.startswith(INSTALL)]
    assert len(installs) == 2, installs
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert installs == [line for line in ci_lines if line.startswith(INSTALL)]
    assert installs[0].endswith("&& simlab run protocols/quickstart.yaml")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch repository root: the protocols and notebooks, no runs."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "protocols", root / "protocols")
    shutil.copytree(ROOT / "analyses", root / "analyses")
    return root


def _environment(cwd: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the simlab command
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PWD"] = str(cwd)
    env["MPLBACKEND"] = "Agg"
    return env


def test_the_readme_commands_run(workdir):
    for command in shell_commands():
        if command.startswith(INSTALL):
            continue  # CI runs them (test_the_install_commands_are_what_ci_runs)
        done = subprocess.run(["bash", "-c", command], cwd=workdir, env=_environment(workdir),
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (workdir / "runs" / "tiny" / "analyses" / "identify-electrophysiology-units8-noise0.5.nc").is_file()
    assert (workdir / "runs" / "tiny" / "report.html").is_file()


def test_the_readme_python_runs(workdir, monkeypatch):
    if not (workdir / "runs" / "tiny").is_dir():
        pytest.skip("the shell tour did not run")
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    for kind, text in BLOCKS:
        if kind == "python":
            exec(compile(text, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["result"].attrs["target"] == "learning_rule"
