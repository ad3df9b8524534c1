"""An analysis added from outside the package: its settings model, compute function and table
are defined here, registered once with ``register_analysis``, and run through a protocol by
``simlab.pipeline.run_protocol`` like a built-in."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from simlab.analysis.analyses import format_result, load_result, output_stems, register_analysis, run_analysis
from simlab.errors import SimlabError
from simlab.protocol import parse_protocol
from simlab.registry import ANALYSES
from simlab.rundir import RunDirectory

from tests.conftest import quiet

NAME = "session_means"


class SessionMeansSpec(BaseModel):
    """Settings of the session-means analysis: which rigs' recordings, which observables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rigs: Optional[list[str]] = Field(None, min_length=1)  # None: every rig of the protocol
    observables: Optional[list[str]] = Field(None, min_length=1)  # None: all


def session_means(recording: xr.Dataset, spec: SessionMeansSpec) -> xr.Dataset:
    """The mean of each observable over the subjects of each learning rule, per layer and
    session (padded layers of shallower subjects, NaN, left out of the mean)."""
    observation = recording["observation"]
    if spec.observables is not None:
        observation = observation.sel(observable=spec.observables)
    means = observation.groupby("learning_rule").mean("subject")
    return xr.Dataset({"session_mean": means}, attrs={"title": "mean observables per learning rule and session"})


def format_session_means(result: xr.Dataset) -> str:
    """The last session's means at layer 0, one row per rule and a column per observable."""
    last = result["session_mean"].isel(session=-1, layer=0)
    observables = [str(o) for o in result["observable"].values]
    lines = [f"{result.attrs['title']}: layer 0, last session", "rule " + " ".join(observables)]
    for rule in result["learning_rule"].values:
        lines.append(f"{rule} " + " ".join(f"{float(last.sel(learning_rule=rule, observable=o)):.4g}" for o in observables))
    return "\n".join(lines)


@pytest.fixture
def registered():
    entry = register_analysis(NAME, spec=SessionMeansSpec, compute=session_means, table=format_session_means)
    yield entry
    ANALYSES.unregister(NAME)


# A cohort of four small networks, recorded by the synapse rig alone, with the new analysis.
PROTOCOL = f"""\
name: extension-test
seed: 0
cohort:
  architecture: [small]
  task: [digits]
  learning_rule: [sgdm, feedback_alignment]
  batch_size: [16]
  replicates: 2
architectures:
  small: {{type: mlp, hidden: [8]}}
training:
  steps: 12
recording:
  sessions: 3
  stimuli: 8
rigs:
  synapse: {{}}
analyses:
  {NAME}: {{observables: [weight_raw_mean, weight_abs_median]}}
"""


def test_a_registered_analysis_runs_through_a_protocol(registered, tmp_path):
    from simlab.pipeline import run_protocol

    protocol = tmp_path / "extension-test.yaml"
    protocol.write_text(PROTOCOL)
    run = run_protocol(protocol, tmp_path / "run", progress=False, echo=quiet)

    nc, txt = run.analysis(NAME, "nc"), run.analysis(NAME, "txt")
    assert nc.is_file() and txt.is_file()
    result = load_result(nc)
    assert result.attrs["schema"] == f"simlab.{NAME}/1"  # given by run_analysis: the analysis set none
    assert txt.read_text() == format_session_means(result) + "\n"
    assert format_result(result) == format_session_means(result)  # what `simlab info` prints

    # the means by hand, with numpy, from the recording the rig wrote
    with xr.open_dataset(run.recording("synapse")) as recording:
        observation = recording["observation"].transpose("subject", "layer", "session", "observable")
        values = observation.values.astype(np.float64)
        rules = recording["learning_rule"].values.astype(str)
        observables = list(recording["observable"].values.astype(str))
    picked = [observables.index("weight_raw_mean"), observables.index("weight_abs_median")]
    assert sorted(result["learning_rule"].values) == ["feedback_alignment", "sgdm"]
    for rule in ("sgdm", "feedback_alignment"):
        expected = np.nanmean(values[rules == rule][..., picked], axis=0)  # (layer, session, observable)
        got = result["session_mean"].sel(learning_rule=rule).transpose("layer", "session", "observable").values
        assert (rules == rule).sum() == 2 and expected.shape == (2, 3, 2)
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_the_protocol_checks_a_registered_analysis_by_its_model(registered):
    base = "name: p\ncohort: {architecture: [mlp], task: [digits], learning_rule: [sgdm], batch_size: [8]}\n"
    protocol = parse_protocol(base + f"analyses:\n  {NAME}: {{rigs: [synapse]}}\n")
    assert protocol.analyses[NAME] == SessionMeansSpec(rigs=["synapse"])
    with pytest.raises(SimlabError, match=rf"analyses\.{NAME}\.colour"):
        parse_protocol(base + f"analyses:\n  {NAME}: {{colour: red}}\n")
    ANALYSES.unregister(NAME)
    try:
        with pytest.raises(SimlabError, match=rf"unknown analysis '{NAME}'"):
            parse_protocol(base + f"analyses:\n  {NAME}: {{}}\n")
    finally:
        ANALYSES.register(NAME, registered)


def test_outputs_name_the_files_and_a_mapping_fills_them(tiny_run_copy):
    """Two outputs chosen by the settings; compute returns one result per output stem, and
    receives the options its signature names (here ``echo``)."""

    class PerRigSpec(BaseModel):
        rigs: list[str] = ["synapse", "paired"]

    said = []

    def per_rig(run, spec, echo):
        echo("per rig")
        return {f"sites-{rig}": xr.load_dataset(run.recording(rig))[["observation"]].count("session")
                for rig in spec.rigs}

    register_analysis("per_rig", spec=PerRigSpec, compute=per_rig, table=lambda r: "counted",
                      outputs=lambda spec: [f"sites-{rig}" for rig in spec.rigs], reads=("run",))
    try:
        run = RunDirectory(tiny_run_copy)
        assert output_stems("per_rig") == ["sites-synapse", "sites-paired"]
        paths = run_analysis(run, "per_rig", {"rigs": ["paired"]}, echo=said.append)
        assert paths == [run.analysis("sites-paired", "nc")] and said == ["per rig", "counted"]
        with xr.open_dataset(run.recording("paired")) as paired:
            expected = np.isfinite(paired["observation"].values).sum(axis=paired["observation"].dims.index("session"))
        np.testing.assert_array_equal(load_result(paths[0])["observation"].values, expected)
    finally:
        ANALYSES.unregister("per_rig")


def test_a_result_that_does_not_match_the_outputs_is_refused(tiny_run_copy):
    class NoSettings(BaseModel):
        pass

    register_analysis("two_parts", spec=NoSettings, compute=lambda recording, spec: recording,
                      table=str, outputs=lambda spec: ["part-a", "part-b"])
    try:
        with pytest.raises(SimlabError, match="returned one Dataset for outputs part-a, part-b"):
            run_analysis(RunDirectory(tiny_run_copy), "two_parts", progress=False, echo=quiet)
    finally:
        ANALYSES.unregister("two_parts")


@pytest.mark.parametrize("kwargs, message", [
    ({"spec": dict}, "spec is a pydantic model class"),
    ({"compute": None}, "compute must be callable"),
    ({"reads": ["snapshots"]}, "reads is one or more of recording, subjects, run"),
    ({"name": "identify"}, "'identify' is already registered"),
    ({"name": "two words"}, "names are Python identifiers"),
])
def test_register_analysis_refuses_mistakes(kwargs, message):
    arguments = {"name": "mistake", "spec": SessionMeansSpec, "compute": session_means, "table": str, **kwargs}
    with pytest.raises(SimlabError, match=message):
        register_analysis(arguments.pop("name"), **arguments)
    assert "mistake" not in ANALYSES


def test_every_builtin_analysis_is_registered_with_its_settings_model():
    from simlab.specs import analyses as specs

    assert list(ANALYSES) == ["identify", "generalization", "trajectory", "robustness", "confound"]
    assert dict(specs.ANALYSES) == {
        "identify": specs.IdentifySpec, "generalization": specs.GeneralizationSpec,
        "trajectory": specs.TrajectorySpec, "robustness": specs.RobustnessSpec, "confound": specs.ConfoundSpec,
    }
    assert output_stems("generalization", {"factors": ["task", "batch_size"]}) == [
        "generalization-task", "generalization-batch_size"]
