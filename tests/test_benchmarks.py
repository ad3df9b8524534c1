"""benchmarks/run_all.py reads its numbers from the log ``simlab run`` writes: the two must
not drift apart. (No benchmark is timed here.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_reads_every_stage_and_the_compile_summary_from_a_run_log(run_all, tiny_run):
    log = (tiny_run / "log.txt").read_text()
    stages = {m["name"]: float(m["seconds"]) for m in run_all.STAGE.finditer(log)}
    assert list(stages) == ["train", "subject table", "record", "analysis identify"]
    assert all(m["mib"] for m in run_all.STAGE.finditer(log))
    compiled = run_all.COMPILE.search(log)
    assert compiled and int(compiled["programs"]) >= 4  # one training program per population at least


def test_fitted_exponents_recover_known_power_laws(run_all):
    assert run_all.exponent([1, 2, 4, 8], [3, 6, 12, 24]) == pytest.approx(1.0)
    sizes = [12, 48, 192]
    assert run_all.exponent(sizes, [0.5 * z**1.5 for z in sizes]) == pytest.approx(1.5)
    assert run_all.exponent(sizes, [7.0, 7.0, 7.0]) == pytest.approx(0.0, abs=1e-12)


def test_a_variant_changes_only_replicates_and_steps(run_all, tmp_path):
    import yaml

    base = ROOT / "protocols" / "quickstart.yaml"
    path = run_all.variant(base, tmp_path, replicates=6, steps=500)
    changed, original = yaml.safe_load(path.read_text()), yaml.safe_load(base.read_text())
    assert changed["cohort"]["replicates"] == 6 and changed["training"]["steps"] == 500
    assert changed["name"] != original["name"]
    for key in ("cohort", "training"):
        changed[key].pop("replicates", None), original[key].pop("replicates", None)
        changed[key].pop("steps", None), original[key].pop("steps", None)
    changed.pop("name"), original.pop("name")
    assert changed == original
