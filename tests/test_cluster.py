"""Training on a Dask cluster: the same results as one process, resumable, clear user errors.

A local cluster of 2 spawned worker processes trains the session's tiny protocol; its shards,
subject table, recordings and identification must be bit-identical to the single-process
``tiny_run`` (every coordinate and attribute of the contract, except the ``created`` and
``history`` attributes that say when a file was made). A run killed mid-way (SIGKILL to the
whole process group, workers included) and rerun completes with the same results.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from simlab.cli.main import main
from simlab.cluster import LocalClusterSpec, connect, parse_cluster
from simlab.errors import SimlabError
from simlab.recording.contract import open_recording
from simlab.pipeline import run_protocol
from simlab.training.accelerators import chunk_size, enable_compilation_cache
from simlab.training.snapshots import read_shard

WHEN = ("created", "history")
TINY_RIGS = ("synapse", "electrophysiology", "paired")  # the tiny protocol's default rigs
SIMLAB = Path(sys.executable).with_name("simlab")  # the virtualenv's console script


def quiet(*args, **kwargs) -> None:
    """An ``echo`` for run_protocol that prints nothing."""


def without_when(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k not in WHEN}


def assert_same_run(expected: Path, actual: Path) -> None:
    """Shards bit for bit; subject table, recordings and identification identical."""
    shards = sorted((expected / "snapshots").glob("*.npz"))
    assert shards and [p.name for p in shards] == sorted(p.name for p in (actual / "snapshots").glob("*.npz"))
    for path in shards:
        with np.load(path) as first, np.load(actual / "snapshots" / path.name) as again:
            assert first.files == again.files
            for name in first.files:
                assert np.array_equal(first[name], again[name]), f"{path.name}: {name} differs"
    xr.testing.assert_identical(
        xr.open_dataset(expected / "subjects.nc").load(), xr.open_dataset(actual / "subjects.nc").load()
    )
    for rig in TINY_RIGS:
        first = open_recording(expected / "recordings" / f"{rig}.nc")
        again = open_recording(actual / "recordings" / f"{rig}.nc")
        xr.testing.assert_identical(first.drop_attrs(deep=False), again.drop_attrs(deep=False))
        assert without_when(first.attrs) == without_when(again.attrs)
    xr.testing.assert_identical(
        xr.open_dataset(expected / "analyses" / "identify.nc").load(),
        xr.open_dataset(actual / "analyses" / "identify.nc").load(),
    )


# --------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("text", ["local", "local:0", "local:x", "remote:2", "local:2:0", "local:-1"])
def test_bad_cluster_value_is_one_line_error(text):
    with pytest.raises(SimlabError, match="expected local:N"):
        parse_cluster(text)


def test_cluster_values():
    assert parse_cluster("local:2") == LocalClusterSpec(2, None)
    assert parse_cluster("local:4:1") == LocalClusterSpec(4, 1)


def test_cli_bad_cluster_exits_2_before_writing(tiny_protocol, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", str(tiny_protocol), "--out", str(out), "--cluster", "local:zero", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simlab run: error: --cluster 'local:zero'") and "\n" not in err
    assert not out.exists()


def test_cli_cluster_and_scheduler_exclude_each_other(tiny_protocol):
    with pytest.raises(SystemExit) as exit:
        main(["run", str(tiny_protocol), "--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:1"])
    assert exit.value.code == 2


def test_unreachable_scheduler_is_a_simlab_error():
    with pytest.raises(SimlabError, match="cannot reach a Dask scheduler"):
        with connect(scheduler="tcp://127.0.0.1:1", timeout=1):
            pass


# --------------------------------------------------------------------------- same results


@pytest.fixture(scope="module")
def cluster_run(tiny_protocol, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cluster") / "tiny-test"
    run_protocol(tiny_protocol, out, progress=False, echo=quiet, cluster="local:2")
    return out


def test_local_cluster_gives_identical_results(tiny_run, cluster_run):
    assert_same_run(tiny_run, cluster_run)


def test_cluster_tasks_ran_on_workers(cluster_run):
    log = (cluster_run / "log.txt").read_text()
    assert log.count("on worker tcp://") == 4  # one task per population


def test_shards_combine_into_every_subject(cluster_run):
    table = xr.open_dataset(cluster_run / "subjects.nc").load()
    seen = []
    for path in sorted((cluster_run / "snapshots").glob("*.npz")):
        shard = read_shard(path)
        seen += shard.subject_ids
        np.testing.assert_array_equal(table["loss"].sel(subject=shard.subject_ids).values, shard.losses)
    assert sorted(seen) == sorted(table["subject"].values.tolist())


# --------------------------------------------------------------------------- resume


def test_killed_cluster_run_resumes_to_identical_results(tiny_protocol, tiny_run, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [str(SIMLAB), "run", str(tiny_protocol), "--out", str(out), "--cluster", "local:2", "--quiet"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not list((out / "snapshots").glob("*.npz")) and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before any shard was written"
            time.sleep(0.05)
        assert list((out / "snapshots").glob("*.npz")), "no shard within 120 s"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run and its workers, mid-way
        process.wait()
    finished = sorted((out / "snapshots").glob("*.npz"))
    assert 1 <= len(finished) and not (out / "recordings").exists()
    for path in finished:  # a shard that exists is complete
        read_shard(path)

    run_protocol(tiny_protocol, out, progress=False, echo=quiet, cluster="local:2")
    assert_same_run(tiny_run, out)
    log = (out / "log.txt").read_text()
    assert f"train: {len(finished)} population(s) already in the snapshot store, kept" in log


# --------------------------------------------------------------------------- one host's devices


class FakeDevice:
    def __init__(self, limit):
        self.limit = limit

    def memory_stats(self):
        return None if self.limit is None else {"bytes_limit": self.limit}


def test_chunks_fit_device_memory():
    assert chunk_size(100, 10, [FakeDevice(None)]) == 100  # CPU: memory unknown, one chunk
    assert chunk_size(100, 10, [FakeDevice(200)] * 2) == 20  # half of 200 bytes = 10 subjects per device
    assert chunk_size(5, 10, [FakeDevice(10**6)] * 4) == 5
    assert chunk_size(100, 10**9, [FakeDevice(10)]) == 1  # at least one subject


def test_compilation_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("SIMLAB_COMPILATION_CACHE", "off")
    assert enable_compilation_cache() is None


SHARDED = textwrap.dedent(
    """
    import jax, numpy as np
    assert len(jax.devices()) == 2, jax.devices()
    from simlab.rules.rules import make_rule
    from simlab.subjects.architectures import Network
    from simlab.specs.subjects import MLPSpec
    from simlab.subjects.tasks import TaskData
    from simlab.training.accelerators import run_vmapped
    from simlab.training.population import make_trainer
    rng = np.random.default_rng(0)
    task = TaskData("toy", rng.standard_normal((20, 6, 1)).astype(np.float32), rng.integers(0, 3, 20).astype(np.int32),
                    rng.standard_normal((8, 6, 1)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int32), 3)
    rule = make_rule("sgdm")
    train = make_trainer(Network(MLPSpec(hidden=[4]), 3, rule.credit), rule, 5, 10, [0, 5, 10])
    keys = jax.numpy.stack([jax.random.key(s) for s in range(3)])  # 3 subjects on 2 devices: padded
    x, y = jax.numpy.asarray(task.x_train), jax.numpy.asarray(task.y_train)
    (params, _), losses = run_vmapped(train, keys, x, y)
    (params1, _), losses1 = run_vmapped(train, keys, x, y, devices=jax.devices()[:1])
    assert losses.shape == (3, 10), losses.shape
    np.testing.assert_allclose(np.asarray(losses), np.asarray(losses1), rtol=1e-5, atol=1e-6)
    print("sharded ok")
    """
)


def test_population_sharded_over_two_devices():
    """Two host-platform CPU devices stand in for a multi-GPU host (a fresh process: the
    device count is fixed when JAX starts). Sharded and single-device vmapped programs are
    different XLA programs, so they agree to float tolerance, not bit for bit."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sharded ok" in result.stdout
