"""Rig options as an experimentalist sets them: unit sampling, noise models at zero noise, kept
unit responses, rig files and command-line flags.

The first part drives rigs directly on a tiny MLP (parameters with leading axes [replicate,
session], as a snapshot shard holds them); the second goes through ``simlab record`` on a copy
of the session's tiny run (tests/conftest.py: 12 subjects, shallow (2 sites) and deep (3
sites) MLPs on digits, 4 sessions at steps 0, 10, 20, 30, 16 stimuli).

Every rig setting compiles a program, and compiling dominates the run time: rigs are made once
per setting (``rig()``) and noise-free where noise is not the point.
"""

from __future__ import annotations

import functools
import math
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from simlab.cli.main import main
from simlab.protocol import plan_cohort
from simlab.recording.contract import open_recording, problems
from simlab.recording.observables import (
    activation_observables,
    activity_change_observables,
    observables_for,
    weight_observables,
)
from simlab.recording.rigs import POST, PRE, Rig, sample_units
from simlab.specs.rigs import RigSpec, ScheduleSpec
from simlab.rundir import RunDirectory, recording_name
from simlab.subjects.architectures import Network
from simlab.specs.subjects import MLPSpec

N_CLASSES = 5
MLP = Network(MLPSpec(hidden=[12, 12]), N_CLASSES, "backprop")
INPUT_SHAPE = (20, 1)
SIZES = {"dense_0": (20, 12), "dense_1": (12, 12), "readout": (12, N_CLASSES)}  # (inputs, outputs)
SUBJECTS = [4, 1]  # cohort indices of the two replicates
SESSIONS = np.array([3, 7, 9])  # the run's session indices of the three recorded sessions
UNITS, SEED = 4, 3
OBSERVE = {"synapse": weight_observables, "electrophysiology": activation_observables, "paired": activity_change_observables}
STIMULI = np.random.default_rng(0).normal(size=(8, *INPUT_SHAPE)).astype(np.float32)


def _params(seed: int) -> dict:
    """Three sessions of independent initializations with random biases: [session, ...]."""
    rng = np.random.default_rng([seed, 1])
    init = jax.jit(MLP.init)
    sessions = []
    for s in range(len(SESSIONS)):
        params, _ = init(jax.random.key(100 * seed + s), jnp.zeros((1, *INPUT_SHAPE), jnp.float32))
        sessions.append(
            {n: {"w": np.asarray(p["w"]), "b": rng.normal(0, 0.3, p["b"].shape).astype(np.float32)} for n, p in params.items()}
        )
    return jax.tree.map(lambda *a: np.stack(a), *sessions)


REPLICATES = [_params(0), _params(1)]
PARAMS = jax.tree.map(lambda *a: np.stack(a), *REPLICATES)  # [replicate, session, ...]


@functools.lru_cache(maxsize=None)
def rig(**settings) -> Rig:
    return Rig(RigSpec(**settings))


def record(r: Rig, sessions=SESSIONS, params=PARAMS):
    positions = [list(SESSIONS).index(s) for s in sessions]
    params = jax.tree.map(lambda a: a[:, positions], params)
    return r.record(MLP, params, STIMULI, SUBJECTS, np.asarray(sessions))


def site_outputs(params_one_session) -> dict[str, np.ndarray]:
    _, sites = jax.jit(MLP.apply)(params_one_session, {}, STIMULI)
    return {name: np.asarray(site.output).reshape(len(STIMULI), -1) for name, site in sites.items()}


def assert_same_outputs(recorded, reference):
    """The rig's forward pass runs batched inside its program: equal up to float32 rounding."""
    np.testing.assert_allclose(recorded, reference, rtol=1e-5, atol=1e-6)


def at(r: int, s: int) -> dict:
    return jax.tree.map(lambda a: a[r, s], PARAMS)


# --------------------------------------------------------------------------- unit sampling


def test_chronic_sampling_keeps_the_same_units_at_every_session():
    result = record(rig(type="electrophysiology", units=UNITS, seed=SEED, keep_units=True))
    for layer, name in enumerate(MLP.site_names):
        units = result.units[name]
        assert units.shape == (len(SUBJECTS), len(SESSIONS), UNITS)
        for r, subject in enumerate(SUBJECTS):
            expected = sample_units(SIZES[name][1], UNITS, SEED, subject, layer)
            for s in range(len(SESSIONS)):
                np.testing.assert_array_equal(units[r, s], expected)
                # the kept responses are the true outputs of exactly those units
                assert_same_outputs(result.responses[name][r, s], site_outputs(at(r, s))[name][:, expected])
        assert not np.array_equal(units[0], units[1])  # each subject its own units
    np.testing.assert_array_equal(result.n_recorded, [UNITS] * 3)
    assert result.inputs == {}


def test_acute_sampling_draws_new_units_each_session_seeded_by_the_run_session():
    result = record(rig(type="electrophysiology", units=UNITS, sampling="acute", seed=SEED, keep_units=True))
    changed = 0
    for layer, name in enumerate(MLP.site_names):
        units = result.units[name]
        assert units.shape == (len(SUBJECTS), len(SESSIONS), UNITS)
        for r, subject in enumerate(SUBJECTS):
            for s, session in enumerate(SESSIONS):
                expected = sample_units(SIZES[name][1], UNITS, SEED, subject, layer, POST, int(session))
                np.testing.assert_array_equal(units[r, s], expected)
                assert np.all(np.diff(units[r, s]) > 0)
                assert_same_outputs(result.responses[name][r, s], site_outputs(at(r, s))[name][:, expected])
                chronic = sample_units(SIZES[name][1], UNITS, SEED, subject, layer)
                changed += not np.array_equal(units[r, s], chronic)
            if name != "readout":  # 12 units: 495 possible draws of 4
                assert len({tuple(u) for u in units[r]}) == len(SESSIONS), (name, subject)
    assert changed > 0

    # another process, the same settings: the same units and values
    again = record(Rig(RigSpec(type="electrophysiology", units=UNITS, sampling="acute", seed=SEED, keep_units=True)))
    for name in MLP.site_names:
        np.testing.assert_array_equal(again.units[name], result.units[name])
    np.testing.assert_array_equal(again.observation, result.observation)

    # a schedule that keeps sessions 3 and 9 records the same units there
    subset = record(rig(type="electrophysiology", units=UNITS, sampling="acute", seed=SEED, keep_units=True), [3, 9])
    for name in MLP.site_names:
        np.testing.assert_array_equal(subset.units[name], result.units[name][:, [0, 2]])
    np.testing.assert_array_equal(subset.observation, result.observation[:, :, [0, 2]])

    # another rig seed: other units
    other = record(rig(type="electrophysiology", units=UNITS, sampling="acute", seed=SEED + 1))
    for name in ("dense_0", "dense_1"):
        assert not np.array_equal(other.units[name], result.units[name])


def test_acute_synapse_sampling_records_the_drawn_kernel_entries():
    result = record(rig(type="synapse", units=UNITS, sampling="acute", seed=SEED, keep_units=True))
    for layer, name in enumerate(MLP.site_names):
        n_synapses = SIZES[name][0] * SIZES[name][1]
        for r, subject in enumerate(SUBJECTS):
            for s, session in enumerate(SESSIONS):
                expected = sample_units(n_synapses, UNITS, SEED, subject, layer, POST, int(session))
                np.testing.assert_array_equal(result.units[name][r, s], expected)
                kernel = PARAMS[name]["w"][r, s].ravel()
                np.testing.assert_array_equal(result.responses[name][r, s], kernel[expected])
                np.testing.assert_allclose(
                    result.observation[r, layer, s], weight_observables(kernel[expected], xp=np), rtol=1e-6, atol=1e-7
                )
            assert len({tuple(u) for u in result.units[name][r]}) == len(SESSIONS)
    np.testing.assert_array_equal(result.n_units, [20 * 12, 12 * 12, 12 * N_CLASSES])


@pytest.mark.parametrize("sampling", ["chronic", "acute"])
def test_paired_rig_draws_pre_and_post_units_independently(sampling):
    result = record(rig(type="paired", units=UNITS, sampling=sampling, seed=SEED))
    acute = sampling == "acute"
    for layer, name in enumerate(MLP.site_names):
        n_in, n_out = SIZES[name]
        pre, post = result.inputs[name], result.units[name]
        assert pre.shape == post.shape == (len(SUBJECTS), len(SESSIONS), UNITS)
        for r, subject in enumerate(SUBJECTS):
            for s, session in enumerate(SESSIONS):
                which = int(session) if acute else None
                np.testing.assert_array_equal(pre[r, s], sample_units(n_in, UNITS, SEED, subject, layer, PRE, which))
                np.testing.assert_array_equal(post[r, s], sample_units(n_out, UNITS, SEED, subject, layer, POST, which))
    # dense_1 has 12 inputs and 12 outputs: one stream for both roles would draw the same units
    assert not np.array_equal(result.inputs["dense_1"], result.units["dense_1"])


@pytest.mark.parametrize("kind", ["synapse", "electrophysiology", "paired"])
def test_all_units_are_every_index_at_every_session(kind):
    result = record(rig(type=kind))
    for name in MLP.site_names:
        n_in, n_out = SIZES[name]
        available = n_in * n_out if kind == "synapse" else n_out
        np.testing.assert_array_equal(result.units[name], np.broadcast_to(np.arange(available), (2, 3, available)))
        if kind == "paired":
            np.testing.assert_array_equal(result.inputs[name], np.broadcast_to(np.arange(n_in), (2, 3, n_in)))
    np.testing.assert_array_equal(result.n_recorded, result.n_units)


def test_acute_sampling_of_all_units_is_every_index():
    result = record(rig(type="paired", sampling="acute"))
    for name in MLP.site_names:
        n_in, n_out = SIZES[name]
        np.testing.assert_array_equal(result.units[name], np.broadcast_to(np.arange(n_out), (2, 3, n_out)))
        np.testing.assert_array_equal(result.inputs[name], np.broadcast_to(np.arange(n_in), (2, 3, n_in)))
    np.testing.assert_array_equal(result.observation, record(rig(type="paired")).observation)


# --------------------------------------------------------------------------- noise models at zero noise


def test_noiseless_recordings_are_the_true_statistics():
    """The baseline of the zero-noise comparisons, against references outside the rig."""
    synapse = record(rig(type="synapse")).observation
    ephys = record(rig(type="electrophysiology")).observation
    for r in range(2):
        for s in range(3):
            outputs = site_outputs(at(r, s))
            for layer, name in enumerate(MLP.site_names):
                kernel = PARAMS[name]["w"][r, s].ravel()
                np.testing.assert_allclose(synapse[r, layer, s], weight_observables(kernel, xp=np), rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(ephys[r, layer, s], activation_observables(outputs[name], xp=np), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["synapse", "electrophysiology", "paired"])
@pytest.mark.parametrize("model", ["gain", "lognormal"])
def test_zero_noise_of_any_model_is_the_noiseless_recording(kind, model):
    noiseless = record(rig(type=kind)).observation
    result = record(rig(type=kind, noise_model=model, noise=0.0, seed=7))
    np.testing.assert_array_equal(result.observation, noiseless)


def test_zero_noise_with_sampled_units_is_the_noiseless_recording_of_those_units():
    noiseless = record(rig(type="electrophysiology", units=UNITS, seed=SEED, keep_units=True))
    for model in ("gain", "lognormal"):
        result = record(rig(type="electrophysiology", units=UNITS, seed=SEED, noise_model=model, keep_units=True))
        np.testing.assert_array_equal(result.observation, noiseless.observation)
        for name in MLP.site_names:
            np.testing.assert_array_equal(result.responses[name], noiseless.responses[name])


def test_poisson_at_zero_noise_still_counts_spikes():
    """Poisson noise is set by rate_gain and count_window, not by ``noise``: never the identity."""
    noiseless = record(rig(type="electrophysiology", units=UNITS, seed=SEED, keep_units=True))
    spikes = record(rig(type="electrophysiology", units=UNITS, seed=SEED, noise_model="poisson", keep_units=True))
    for name in MLP.site_names:
        true, counted = noiseless.responses[name], spikes.responses[name]
        np.testing.assert_array_equal(counted[true <= 0], 0.0)
        assert not np.array_equal(counted, np.maximum(true, 0))
        counts = counted.astype(np.float64) * 20.0 * 0.5
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)


# --------------------------------------------------------------------------- kept unit responses


@pytest.mark.parametrize(
    "settings",
    [
        dict(type="synapse", noise_model="lognormal", noise=0.3),
        dict(type="electrophysiology", noise_model="gain", noise=0.3),
        dict(type="electrophysiology", noise_model="poisson"),
        dict(type="paired", noise_model="gaussian", noise=0.3),
    ],
    ids=["synapse-lognormal", "ephys-gain", "ephys-poisson", "paired-gaussian"],
)
def test_observables_of_the_kept_responses_are_the_recorded_observation(settings):
    result = record(rig(units=UNITS, sampling="acute", seed=SEED, keep_units=True, **settings))
    kind = settings["type"]
    trailing = {"synapse": (UNITS,), "electrophysiology": (len(STIMULI), UNITS), "paired": (len(STIMULI),)}[kind]
    for layer, name in enumerate(MLP.site_names):
        responses = result.responses[name]
        assert responses.shape == (len(SUBJECTS), len(SESSIONS), *trailing)
        assert np.isfinite(responses).all()
        np.testing.assert_allclose(
            result.observation[:, layer], OBSERVE[kind](responses, xp=np), rtol=1e-5, atol=1e-6, equal_nan=True
        )
    assert record(rig(type=kind, units=UNITS, sampling="acute", seed=SEED)).responses is None


@pytest.mark.parametrize("kind", ["synapse", "electrophysiology"])
def test_noise_placement_total_is_only_for_rigs_that_sum_terms(kind):
    with pytest.raises(ValueError, match=f"noise_placement total is for rigs that sum measured terms \\(paired\\); a {kind} rig"):
        RigSpec(type=kind, noise_placement="total")
    assert RigSpec(type="paired", noise_placement="total").noise_placement == "total"
    with pytest.raises(ValueError, match="percentiles"):
        RigSpec(type=kind, percentiles="midpoint")


def test_the_reference_settings_by_default_rename_no_recording():
    """The new fields at their defaults leave ``<rig>.nc`` as it was; set, they name the file."""
    base = RigSpec(type="paired", seed=2)
    assert recording_name("paired", RigSpec(type="paired", seed=2, noise_placement="terms", percentiles="nearest"), base) == "paired"
    assert recording_name("paired", RigSpec(type="paired", seed=2, noise_placement="total"), base) == "paired-noise_placementtotal"
    assert recording_name("synapse", RigSpec(type="synapse", percentiles="linear"), RigSpec(type="synapse")) == "synapse-percentileslinear"


def test_linear_percentiles_observe_the_same_responses_with_numpy_interpolation():
    nearest = record(rig(type="electrophysiology", units=UNITS, seed=SEED, keep_units=True))
    linear = record(rig(type="electrophysiology", units=UNITS, seed=SEED, keep_units=True, percentiles="linear"))
    for layer, name in enumerate(MLP.site_names):
        np.testing.assert_array_equal(nearest.responses[name], linear.responses[name])
        np.testing.assert_allclose(
            linear.observation[:, layer], OBSERVE["electrophysiology"](linear.responses[name], xp=np, percentiles="linear"),
            rtol=1e-5, atol=1e-6, equal_nan=True,
        )
    assert not np.allclose(nearest.observation, linear.observation, equal_nan=True)


def test_paired_noise_on_the_total_keeps_the_noiseless_terms_summed():
    """``total``: kept activity changes minus the noiseless ones are i.i.d. N(0, sd^2) per
    stimulus; ``terms``: their sd is sd sqrt(N_pre) / N_post. 48 draws per site: the sample
    sd is within 35% (3.5 standard errors) of the true one."""
    clean = record(rig(type="paired", seed=SEED, keep_units=True))
    for placement in ("total", "terms"):
        noisy = record(rig(type="paired", seed=SEED, keep_units=True, noise=0.3, noise_placement=placement))
        for name, (n_pre, n_post) in SIZES.items():
            scale = 1.0 if placement == "total" else math.sqrt(n_pre) / n_post
            residual = noisy.responses[name] - clean.responses[name]
            assert residual.std() == pytest.approx(0.3 * scale, rel=0.35), (placement, name)


# --------------------------------------------------------------------------- simlab record


def file_state(paths) -> dict:
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths}


def snapshots(run: Path) -> list[Path]:
    paths = sorted((run / "snapshots").iterdir())
    assert len(paths) == 4  # one shard per population
    return paths


def run_record(capsys, run: Path, *flags) -> tuple[int, str, str]:
    code = main(["record", str(run), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def written(out: str) -> Path:
    paths = [line.removeprefix("wrote ").strip() for line in out.splitlines() if line.startswith("wrote ")]
    assert len(paths) == 1, out
    return Path(paths[0])


def test_record_poisson_states_every_rig_setting(tiny_run_copy, capsys):
    run = tiny_run_copy
    before = file_state(snapshots(run))
    code, out, err = run_record(capsys, run, "--rig", "electrophysiology", "--units", "3", "--noise-model", "poisson", "--quiet")
    assert code == 0, err
    path = written(out)
    assert path.parent == run / "recordings" and "poisson" in path.name
    assert file_state(snapshots(run)) == before
    assert problems(path) == []

    ds = open_recording(path)
    settings = yaml.safe_load(ds.attrs["rig"])
    assert set(RigSpec.model_fields) <= set(settings), set(RigSpec.model_fields) - set(settings)
    protocol_rig = RunDirectory(run).protocol.rigs["electrophysiology"]
    expected = {
        "type": "electrophysiology",
        "units": 3,
        "sampling": "chronic",
        "noise_model": "poisson",
        "noise": 0.0,
        "rate_gain": 20.0,
        "count_window": 0.5,
        "seed": protocol_rig.seed,
        "percentiles": "nearest",
        "noise_placement": "terms",
        "schedule": {"window": [0.0, 1.0], "every": 1, "count": None, "spacing": "linear"},
        "stimuli": None,
        "keep_units": False,
        "max_unit_bytes": 2**30,
    }
    assert {field: settings[field] for field in RigSpec.model_fields} == expected
    assert settings["name"] == "electrophysiology" and settings["measure"] == "activation"
    # the attribute alone rebuilds the rig
    assert RigSpec(**{field: settings[field] for field in RigSpec.model_fields}) == protocol_rig.model_copy(
        update={"units": 3, "noise_model": "poisson"}
    )

    np.testing.assert_array_equal(ds["n_recorded"].values, np.minimum(3, ds["n_units"].values))
    assert ds["unit_index"].dims == ("subject", "layer", "unit")  # chronic: no session axis
    assert "unit_response" not in ds
    real = ds["layer_name"].values != ""
    # raw_mean of spike-count rates is a mean of non-negative values
    raw_mean = ds["observation"].sel(observable="activation_raw_mean").values
    assert np.all(raw_mean[real] >= 0)


RIG_FILE = """\
name: acute_noise_rig
type: electrophysiology
units: 2
sampling: acute
schedule: {count: 3, spacing: log}
stimuli: {source: noise, size: 8, seed: 1}
"""


def test_record_with_a_rig_file_and_a_flag_override(tiny_run_copy, tmp_path, capsys):
    run = tiny_run_copy
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(RIG_FILE)
    before = file_state(snapshots(run))
    code, out, err = run_record(capsys, run, "--rig", str(rig_file), "--seed", "5", "--quiet")
    assert code == 0, err
    path = written(out)
    assert path.name == "acute_noise_rig-seed5.nc"  # the rig file's name and what the flags changed
    assert file_state(snapshots(run)) == before
    assert problems(path) == []

    ds = open_recording(path)
    # round(geomspace(1, 4, 3)) - 1 = 0, 1, 3 of the run's sessions at steps 0, 10, 20, 30
    assert ds.sizes["session"] == 3
    np.testing.assert_array_equal(ds["session"].values, [0, 1, 3])
    np.testing.assert_array_equal(ds["step"].values, [0, 10, 30])
    np.testing.assert_allclose(ds["fraction"].values, [0, 1 / 3, 1])

    settings = yaml.safe_load(ds.attrs["rig"])
    assert settings["name"] == "acute_noise_rig"
    assert settings["seed"] == 5
    assert (settings["units"], settings["sampling"]) == (2, "acute")
    assert settings["schedule"] == {"window": [0.0, 1.0], "every": 1, "count": 3, "spacing": "log"}
    assert settings["stimuli"] == {"source": "noise", "size": 8, "seed": 1}
    stimulus_file = run / "stimuli" / "digits-noise-n8-seed1.npz"
    assert stimulus_file.is_file()
    assert settings["stimulus_sets"] == {"digits": str(stimulus_file.relative_to(run))}
    with np.load(stimulus_file) as data:
        stimuli = data["inputs"]
    assert len(stimuli) == 8

    # acute: unit indices per session, drawn by (rig seed, subject, layer, run session)
    assert ds["unit_index"].dims == ("subject", "layer", "session", "unit")
    plan = plan_cohort(RunDirectory(run).protocol)
    index = ds["unit_index"].values
    for i, subject in enumerate(plan.subjects):
        assert subject.index == i and ds["subject"].values[i] == subject.id
        for layer in range(3):
            n_units = int(ds["n_units"].values[i, layer])
            if n_units == 0:
                np.testing.assert_array_equal(index[i, layer], -1)  # the shallow net's padding layer
                continue
            for s, session in enumerate([0, 1, 3]):
                np.testing.assert_array_equal(index[i, layer, s], sample_units(n_units, 2, 5, i, layer, POST, session))
    assert any(not np.array_equal(index[i, 0, 0], index[i, 0, 1]) for i in range(len(plan.subjects)))

    # the values: the noise stimuli through the subject's own snapshots, at those units
    from simlab.subjects.tasks import load_task
    from simlab.training.snapshots import read_shard

    protocol = RunDirectory(run).protocol
    pop = plan.populations[0]
    network = Network(protocol.architecture_spec(pop.architecture), load_task(protocol.task_spec(pop.task)).n_classes, "backprop")
    shard = read_shard(RunDirectory(run).shard(pop.id))
    for replicate, subject in enumerate(pop.subjects):
        for s, session in enumerate([0, 1, 3]):
            params = {site: {k: v[replicate, session] for k, v in leaves.items()} for site, leaves in shard.params.items()}
            _, sites = network.apply(params, {}, stimuli)
            for layer, name in enumerate(network.site_names):
                output = np.asarray(sites[name].output).reshape(len(stimuli), -1)
                expected = activation_observables(output[:, index[subject.index, layer, s]], xp=np)
                np.testing.assert_allclose(
                    ds["observation"].values[subject.index, layer, s], expected, rtol=1e-4, atol=1e-5, equal_nan=True
                )


@pytest.mark.parametrize(
    "line, field",
    [
        ("units: -3", "units"),
        ("noise_model: poison", "noise_model"),
        ("nosie: 0.2", "nosie"),
        ("schedule: {count: 0}", "schedule.count"),
        ("sampling: sometimes", "sampling"),
    ],
)
def test_a_bad_field_in_a_rig_file_is_a_one_line_error_naming_it(tiny_run_copy, tmp_path, capsys, line, field):
    run = tiny_run_copy
    rig_file = tmp_path / "bad.yaml"
    rig_file.write_text(f"type: electrophysiology\n{line}\n")
    recordings = sorted((run / "recordings").iterdir())
    code, out, err = run_record(capsys, run, "--rig", str(rig_file), "--quiet")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("simlab record: error:"), err
    assert f"{field} ({rig_file})" in err, err
    assert "Traceback" not in err
    assert sorted((run / "recordings").iterdir()) == recordings


def test_a_bad_flag_value_names_the_flag(tiny_run_copy, capsys):
    code, _, err = run_record(capsys, tiny_run_copy, "--rig", "synapse", "--noise-model", "poisson", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "electrophysiology" in err


def test_a_schedule_the_snapshots_cannot_serve_lists_the_sessions(tiny_run_copy, capsys):
    run = tiny_run_copy
    recordings = sorted((run / "recordings").iterdir())
    code, out, err = run_record(capsys, run, "--rig", "synapse", "--sessions", "50", "--quiet")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "50" in err
    assert "0 (0.00), 10 (0.33), 20 (0.67), 30 (1.00)" in err, err
    assert sorted((run / "recordings").iterdir()) == recordings


def test_keep_units_writes_the_unit_responses(tiny_run_copy, capsys):
    run = tiny_run_copy
    before = file_state(snapshots(run))
    code, out, err = run_record(
        capsys, run, "--rig", "electrophysiology", "--units", "3", "--noise", "0.2", "--keep-units", "--quiet"
    )
    assert code == 0, err
    path = written(out)
    assert file_state(snapshots(run)) == before
    assert problems(path) == []
    ds = open_recording(path)
    assert yaml.safe_load(ds.attrs["rig"])["keep_units"] is True
    response = ds["unit_response"]
    assert response.dims == ("subject", "layer", "session", "stimulus", "unit")
    assert response.shape == (12, 3, 4, 16, 3)
    assert response.dtype == np.float32
    real = ds["layer_name"].values != ""
    values = response.values
    assert np.isfinite(values[real]).all()
    assert np.isnan(values[~real]).all()  # the shallow net's padding layer
    observed = ds["observation"].values
    for i, layer in zip(*np.nonzero(real)):
        np.testing.assert_allclose(
            activation_observables(values[i, layer], xp=np), observed[i, layer], rtol=1e-5, atol=1e-6, equal_nan=True
        )


def test_keep_units_over_the_size_limit_writes_nothing(tiny_run_copy, capsys):
    run = tiny_run_copy
    recordings = sorted((run / "recordings").iterdir())
    code, out, err = run_record(
        capsys, run, "--rig", "electrophysiology", "--keep-units", "--max-unit-bytes", "10", "--quiet"
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    # 12 subjects x 3 layers x 4 sessions x 16 stimuli x 16 units x 4 bytes = 147,456 B
    assert "144.0 KiB" in err and "10.0 B" in err, err
    assert sorted((run / "recordings").iterdir()) == recordings
    assert "wrote" not in out


# --------------------------------------------------------------------------- bad seeds and sizes


@pytest.mark.parametrize(
    "flags",
    [
        ["--rig", "electrophysiology", "--units", "3", "--seed", "-1"],
        ["--rig", "electrophysiology", "--noise-model", "poisson", "--seed", "-1"],
        ["--rig", "electrophysiology", "--stimuli", "noise", "--stimuli-seed", "-1"],
    ],
    ids=["unit-sampling", "poisson", "stimuli"],
)
def test_a_negative_seed_is_recorded_or_rejected_in_one_line(tiny_run_copy, capsys, flags):
    code, out, err = run_record(capsys, tiny_run_copy, *flags, "--quiet")  # raising is the failure
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "seed" in err, err
    else:
        assert code == 0, err


def test_a_heldout_stimulus_set_larger_than_the_test_set_is_a_one_line_error(tiny_run_copy, capsys):
    code, out, err = run_record(
        capsys, tiny_run_copy, "--rig", "electrophysiology", "--stimuli", "heldout", "--stimuli-size", "100000", "--quiet"
    )  # raising is the failure
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "100000" in err, err
