"""Finding a rig by name, type or file (``resolve_rig``) and naming its recording file.

Errors name the parameter that set a bad value (``rig=...``, ``units=...``); a caller such as
the command line passes its own names for the parameters (its flags) to be shown instead.
"""

from __future__ import annotations


import pytest

from simlab.errors import SimlabError
from simlab.protocol import parse_protocol
from simlab.recording.rigfiles import resolve_rig
from simlab.specs.rigs import RigSpec

PROTOCOL = parse_protocol(
    """\
name: rigfiles-test
cohort: {architecture: [mlp], task: [digits], learning_rule: [sgdm], batch_size: [16]}
architectures:
  mlp: {type: mlp, hidden: [8]}
rigs:
  ephys_sparse: {type: electrophysiology, units: 20, seed: 3}
"""
)


def test_a_rig_of_the_protocol_with_overrides():
    name, spec = resolve_rig("ephys_sparse", PROTOCOL, {"noise": 0.5, "schedule": {"count": 2}})
    assert name == "ephys_sparse"
    assert spec == RigSpec(type="electrophysiology", units=20, seed=3, noise=0.5, schedule={"count": 2})


def test_a_rig_type_and_a_rig_file(tmp_path):
    assert resolve_rig("paired", PROTOCOL) == ("paired", RigSpec(type="paired"))
    rig_file = tmp_path / "my_rig.yaml"
    rig_file.write_text("type: synapse\nunits: 0.25\n")
    assert resolve_rig(str(rig_file), PROTOCOL, {"seed": 2}) == ("my_rig", RigSpec(type="synapse", units=0.25, seed=2))


def test_an_unknown_rig_is_named_by_its_parameter_and_lists_the_known_ones():
    with pytest.raises(SimlabError) as raised:
        resolve_rig("ephys", PROTOCOL)
    message = str(raised.value)
    assert message.startswith("rig='ephys': not a rig of the protocol, a rig type or a rig file")
    assert "(known rigs: ephys_sparse, synapse, electrophysiology, paired)" in message
    assert raised.value.message({"rig": "--rig"}).startswith("--rig 'ephys': not a rig of the protocol")


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({"units": 0}, "bad rig settings: units=0: a unit count must be >= 1, got 0"),
        ({"noise": -1.0}, "bad rig settings: noise=-1.0: Input should be greater than or equal to 0"),
        ({"schedule": {"count": 0}}, "bad rig settings: schedule.count=0: Input should be greater than 0"),
    ],
)
def test_a_bad_override_is_named_by_its_parameter(overrides, says):
    with pytest.raises(SimlabError) as raised:
        resolve_rig("synapse", PROTOCOL, overrides)
    assert str(raised.value) == says
    assert "--" not in str(raised.value)


def test_the_caller_names_the_parameters_it_set():
    names = {"units": "--units", "schedule.count": "--sessions"}
    with pytest.raises(SimlabError) as raised:
        resolve_rig("synapse", PROTOCOL, {"units": 0, "schedule": {"count": 0}})
    assert raised.value.message(names) == (
        "bad rig settings: --units 0: a unit count must be >= 1, got 0; "
        "--sessions 0: Input should be greater than 0"
    )


def test_a_bad_field_of_a_rig_file_is_named_with_the_file(tmp_path):
    rig_file = tmp_path / "bad.yaml"
    rig_file.write_text("type: electrophysiology\nsampling: sometimes\n")
    with pytest.raises(SimlabError, match=rf"sampling \({rig_file}\): Input should be 'chronic' or 'acute'"):
        resolve_rig(str(rig_file), PROTOCOL, {"units": 3})
