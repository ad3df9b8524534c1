"""The protocol schema and loader: defaults, cross-references, and problems located by line."""

import textwrap

import numpy as np
import pytest

from simlab.errors import SimlabError
from simlab.protocol import Protocol, ProtocolError, load_protocol, parse_protocol
from simlab.specs.rigs import RIG_TYPES, RigSpec
from simlab.specs.rules import Adam, SGDMomentum
from simlab.specs.subjects import MLPSpec, PRESET_ARCHITECTURES

MINIMAL = """\
name: tiny
cohort:
  architecture: mlp
  task: mnist1d
  learning_rule: sgdm
  batch_size: 32
"""


def parse(text: str) -> Protocol:
    return parse_protocol(textwrap.dedent(text))


def problems(text: str) -> dict[str, tuple[int | None, str]]:
    """location -> (line, message) of every problem the loader reports."""
    with pytest.raises(ProtocolError) as info:
        parse(text)
    return {p.location: (p.line, p.message) for p in info.value.problems}


def with_extra(extra: str) -> str:
    return MINIMAL + textwrap.dedent(extra)


def test_defaults_are_filled():
    protocol = parse(MINIMAL)
    assert protocol.seed == 0 and protocol.description is None
    assert protocol.cohort.architecture == ["mlp"]  # a scalar factor is a one-level list
    assert protocol.cohort.batch_size == [32]
    assert protocol.cohort.replicates == 3
    assert protocol.training.steps == 1000 and protocol.training.vectorize == "auto"
    assert protocol.recording.sessions == 21 and protocol.recording.stimuli == 256
    assert list(protocol.rigs) == list(RIG_TYPES)
    assert [(r.type, r.units, r.noise, r.seed) for r in protocol.rigs.values()] == [
        ("synapse", "all", 0.0, 0),
        ("electrophysiology", "all", 0.0, 1),
        ("paired", "all", 0.0, 2),
    ]
    assert list(protocol.analyses) == ["identify"]
    assert protocol.analyses["identify"].splits == 10


def test_empty_sections_mean_defaults():
    protocol = parse(with_extra("rigs:\nanalyses:\ntraining:\n  rules:\n"))
    assert list(protocol.rigs) == list(RIG_TYPES) and list(protocol.analyses) == ["identify"]


def test_lookups_prefer_the_protocol_definition_over_presets():
    protocol = parse(
        with_extra(
            """
            architectures:
              mlp: {type: mlp, hidden: [7]}
              wide: {type: mlp, hidden: [256, 256]}
            """
        ).replace("architecture: mlp", "architecture: [mlp, wide, conv1d]")
    )
    assert protocol.architecture_spec("mlp") == MLPSpec(hidden=[7])
    assert protocol.architecture_spec("wide").hidden == [256, 256]
    assert protocol.architecture_spec("conv1d") == PRESET_ARCHITECTURES["conv1d"]
    assert protocol.task_spec("mnist1d").type == "mnist1d"
    with pytest.raises(SimlabError, match="unknown architecture 'resnet'"):
        protocol.architecture_spec("resnet")


def test_rule_overrides_apply_and_the_rest_keep_defaults():
    protocol = parse(with_extra("training:\n  rules:\n    sgdm: {learning_rate: 1e-2}\n"))
    assert protocol.rule_hyperparameters("sgdm") == SGDMomentum(learning_rate=0.01)
    assert protocol.rule_hyperparameters("adam") == Adam()


def test_rig_type_is_inferred_from_a_rig_type_name():
    protocol = parse(
        with_extra(
            """
            rigs:
              synapse: {units: all}
              ephys_sparse: {type: electrophysiology, units: 20, noise: 0.5, seed: 3}
            """
        )
    )
    assert protocol.rigs == {
        "synapse": RigSpec(type="synapse"),
        "ephys_sparse": RigSpec(type="electrophysiology", units=20, noise=0.5, seed=3),
    }


def test_yes_and_no_stay_strings():
    protocol = parse(with_extra("description: no\n"))
    assert protocol.description == "no"


@pytest.mark.parametrize(
    "steps, sessions, expected",
    [
        (100, 21, list(range(0, 101, 5))),
        (7, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (10, 4, [0, 3, 7, 10]),  # 0, 3.33, 6.67, 10
        (5, 3, [0, 2, 5]),  # 2.5 rounds half to even
    ],
)
def test_session_steps(steps, sessions, expected):
    protocol = parse(with_extra(f"training: {{steps: {steps}}}\nrecording: {{sessions: {sessions}}}\n"))
    session_steps = protocol.session_steps()
    assert session_steps.dtype == np.int64
    assert session_steps.tolist() == expected


def test_subject_seed():
    assert parse(with_extra("seed: 2\n")).subject_seed(1) == 2001


def test_to_yaml_round_trips():
    protocol = parse(
        with_extra(
            """
            description: "round trip"
            architectures: {wide: {type: mlp, hidden: [64]}}
            training: {steps: 50, vectorize: loop, rules: {adam: {learning_rate: 1e-4}}}
            rigs:
              synapse: {}
              ephys: {type: electrophysiology, units: 0.5, noise: 0.1}
            analyses: {identify: {splits: 3, classifiers: [linear_svm]}}
            """
        )
    )
    text = protocol.to_yaml()
    assert "steps: 1000" not in text and "sessions: 21" in text  # defaults filled
    assert parse_protocol(text) == protocol


def test_problems_in_every_section_are_reported_together_with_lines():
    found = problems(
        """\
        name: bad name
        cohort:
          architecture: [mlp, resnet]
          task: mnist1d
          learning_rule: [sgdm, backprop]
          batch_size: [32, -3]
          batchsize: 3
        training:
          steps: 10
          rules:
            sgdm: {learning_rate: -1}
            bp: {}
        recording:
          sessions: 12
        rigs:
          ephys: {units: 20}
          synapse: {units: abc}
        analyses:
          identify: {splits: 0}
        """
    )
    assert {location: line for location, (line, _) in found.items()} == {
        "name": 1,
        "cohort.architecture[1]": 3,
        "cohort.learning_rule[1]": 5,
        "cohort.batch_size[1]": 6,
        "cohort.batchsize": 7,
        "training.rules.sgdm.learning_rate": 11,
        "training.rules.bp": 12,
        "recording.sessions": 14,
        "rigs.ephys.type": 16,
        "rigs.synapse.units": 17,
        "analyses.identify.splits": 19,
    }
    assert found["cohort.batch_size[1]"][1] == "expected a positive integer, got -3"
    assert found["cohort.batchsize"][1].startswith("unknown key 'batchsize' (expected one of: architecture, task,")
    assert found["cohort.learning_rule[1]"][1].startswith(
        "unknown learning rule 'backprop' (known: adam, direct_feedback_alignment, feedback_alignment, hebbian,"
        " information_alignment, kolen_pollack, node_perturbation, sgdm, sign_symmetry, symmetric_alignment,"
        " weight_mirror)"
    )
    assert found["cohort.architecture[1]"][1].startswith("unknown architecture 'resnet' (known: alexnet, alexnet_lrn,")
    assert found["training.rules.bp"][1].startswith("unknown learning rule 'bp'")
    assert found["recording.sessions"][1] == "expected at most steps + 1 = 11 sessions (each at its own step), got 12"
    assert "rig 'ephys' is not named after a rig type" in found["rigs.ephys.type"][1]
    assert found["rigs.synapse.units"][1] == "expected 'all' or an integer or a number, got 'abc'"


def test_error_text_lists_file_line_location_and_message(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL.replace("batch_size: 32", "batch_size: 0") + "seed: x\n")
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    assert str(info.value).splitlines() == [
        f"{path}: 2 problems in protocol",
        f"{path}:6: cohort.batch_size[0]: expected a positive integer, got 0",
        f"{path}:7: seed: expected an integer, got 'x'",
    ]
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    "extra, location, line, message",
    [
        ("recording: {sessions: 21, stimulus: 9}\n", "recording.stimulus", 7, "unknown key 'stimulus'"),
        ("rigs:\n  synapse: {units: 3, nosie: 1}\n", "rigs.synapse.nosie", 8, "unknown key 'nosie'"),
        ("architectures:\n  a: {type: mlp, hiden: [3]}\n", "architectures.a.hiden", 8, "unknown key 'hiden'"),
        ("analyses:\n  identify: {split: 3}\n", "analyses.identify.split", 8, "unknown key 'split'"),
        ("analyses:\n  cluster: {}\n", "analyses.cluster", 8, "unknown analysis 'cluster'"),
        ("colour: red\n", "colour", 7, "unknown key 'colour'"),
        ("training: {steps: 5}\n", "training.steps", 7, "expected at least sessions - 1 = 20 steps"),
        ("training: {vectorize: pmap}\n", "training.vectorize", 7, "expected 'auto', 'vmap' or 'loop', got 'pmap'"),
        ("tasks:\n  t: {}\n", "tasks.t", 8, "missing key 'type' (one of: 'mnist1d', 'digits', 'cifar10', 'teacher')"),
        ("rigs:\n  synapse: {units: 2}\n  synapse: {units: 3}\n", "rigs.synapse", 9, "duplicate key 'synapse'"),
    ],
)
def test_single_problems_are_named_and_located(extra, location, line, message):
    found = problems(with_extra(extra))
    assert location in found, found
    assert found[location][0] == line
    assert found[location][1].startswith(message)


def test_missing_key_points_at_its_parent():
    found = problems("name: x\ncohort:\n  architecture: mlp\n  task: digits\n  batch_size: 8\n")
    assert found == {"cohort.learning_rule": (2, "missing required key 'learning_rule'")}


def test_duplicate_levels_are_errors():
    found = problems(MINIMAL.replace("batch_size: 32", "batch_size: [32, 64, 32]"))
    assert found == {"cohort.batch_size[2]": (6, "duplicate level 32 (already at [0])")}


def test_unknown_task_is_reported_even_when_other_sections_fail():
    found = problems(MINIMAL.replace("task: mnist1d", "task: [mnist2d]") + "seed: -1\n")
    assert found["cohort.task[0]"][0] == 4 and "unknown task 'mnist2d'" in found["cohort.task[0]"][1]
    assert found["seed"] == (7, "expected a non-negative integer, got -1")


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("name: x\ncohort: [a\n", 3, "invalid YAML"),
        ("", None, "the protocol is empty"),
        ("- name: x\n", 1, "expected a mapping of sections"),
    ],
)
def test_unreadable_documents(text, line, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocol(text)
    (problem,) = info.value.problems
    assert (problem.location, problem.line) == ("(top level)", line)
    assert problem.message.startswith(message)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(SimlabError, match="nowhere.yaml"):
        load_protocol(path)


def test_cohort_block_problems_are_located_in_their_block():
    found = problems(
        "name: x\n"
        "cohort:\n"
        "  - architecture: [mlp]\n"
        "    task: mnist1d\n"
        "    learning_rule: sgdm\n"
        "    batch_size: 32\n"
        "  - architecture: [knet, conv1d]\n"
        "    task: teacher_image\n"
        "    learning_rule: [sgdm, adamm]\n"
        "    batch_size: 32\n"
        "  - architecture: mlp\n"
        "    task: mnist1d\n"
        "    learning_rule: sgdm\n"
        "    batch_size: [16, 32]\n"
        "    extra: 1\n"
    )
    assert found["cohort[1].architecture[1]"][0] == 7
    assert "'conv1d' cannot be trained on task 'teacher_image'" in found["cohort[1].architecture[1]"][1]
    line, message = found["cohort[1].learning_rule[1]"]
    assert line == 9 and message.startswith("unknown learning rule 'adamm' (known: adam, ")
    assert message.endswith("did you mean 'adam'?")
    assert found["cohort[2]"][1] == (
        "block 2 repeats the population mlp-mnist1d-sgdm-b32 of block 0 (1 repeated in all); "
        "a subject can be in one block only"
    )
    assert found["cohort[2].extra"][1].startswith("unknown key 'extra' (expected one of: architecture, task,")
    assert problems("name: x\ncohort: []\n") == {
        "cohort": (2, "expected a cohort block or a non-empty list of blocks")
    }


DEFINED = """\
name: defined
cohort:
  architecture: {architecture}
  task: mnist1d
  learning_rule: [fa_adam, sgdm, dfa_sgd, bp_sgd]
  batch_size: 32
learning_rules:
  fa_adam: {{credit: feedback_alignment, optimizer: adam, learning_rate: 1.0e-4}}
  dfa_sgd: {{credit: direct_feedback_alignment, optimizer: sgd}}
  bp_sgd: {{credit: backprop, optimizer: sgd, learning_rate: 0.1}}
"""


def test_learning_rules_defined_in_the_protocol():
    from simlab.rules.rules import rule_factors

    protocol = parse(DEFINED.format(architecture="mlp"))
    fa_adam = protocol.rule_hyperparameters("fa_adam")
    assert (fa_adam.credit, fa_adam.optimizer, fa_adam.learning_rate, fa_adam.b1) == ("feedback_alignment", "adam", 1e-4, 0.9)
    assert protocol.rule_hyperparameters("dfa_sgd").momentum == 0.0  # sgd: no momentum
    assert protocol.rule_hyperparameters("dfa_sgd").learning_rate == 0.01  # the credit rule's default
    factors = {rule: rule_factors(rule, protocol.rule_hyperparameters(rule)) for rule in protocol.cohort.learning_rule}
    assert factors == {
        "fa_adam": {"credit_mechanism": "feedback_alignment", "optimizer": "adam"},
        "sgdm": {"credit_mechanism": "backprop", "optimizer": "sgd_momentum"},
        "dfa_sgd": {"credit_mechanism": "direct_feedback_alignment", "optimizer": "sgd"},
        "bp_sgd": {"credit_mechanism": "backprop", "optimizer": "sgd"},
    }
    # written out with each optimizer's own settings, and read back equal
    dumped = protocol.to_yaml()
    assert "b1" not in dumped.split("dfa_sgd:")[1].splitlines()[0]
    assert parse_protocol(dumped) == protocol


def test_problems_of_defined_learning_rules():
    found = problems(
        DEFINED.format(architecture="[mlp, conv1d]").replace("bp_sgd]", "bp_sgd, nope]")
        + """\
  bad: {credit: backprp}
  adam: {credit: backprop}
  mixed: {credit: hebbian, optimizer: adam, momentum: 0.5}
  plain: {credit: hebbian, optimizer: sgd, momentum: 0.5}
"""
    )
    assert found["cohort.learning_rule[2]"] == (
        5, "learning rule 'dfa_sgd' cannot train architecture 'conv1d': it needs mlp architectures, and 'conv1d' is a conv1d"
    )
    assert found["cohort.learning_rule[4]"][1].startswith("unknown learning rule 'nope' (known: adam, bad, bp_sgd,")
    assert found["learning_rules.bad.credit"][1].startswith("unknown credit mechanism 'backprp' (known: backprop,")
    assert found["learning_rules.adam"][1] == "'adam' is a built-in learning rule: give the definition another name"
    assert found["learning_rules.mixed"][1].startswith("momentum: not a setting of optimizer adam (it takes b1, b2, eps)")
    assert found["learning_rules.plain"][1].startswith("momentum: optimizer sgd has none")
    assert found["learning_rules.plain"][0] == 14
