"""The protocols shipped in protocols/ validate, and the reference's design counts as stated."""

from pathlib import Path

import pytest

from simlab.protocol import load_protocol, plan_cohort
from simlab.specs.subjects import input_layout_conflict

PROTOCOLS = sorted((Path(__file__).parents[2] / "protocols").glob("*.yaml"))


@pytest.mark.parametrize("path", PROTOCOLS, ids=[p.stem for p in PROTOCOLS])
def test_shipped_protocol_validates(path):
    protocol = load_protocol(path)
    plan = plan_cohort(protocol)
    assert len(plan) > 0
    for subject in plan.subjects:  # every subject's architecture reads its task's inputs
        architecture = protocol.architecture_spec(subject.architecture)
        assert input_layout_conflict(architecture, protocol.task_spec(subject.task)) is None


def _design(name):
    protocol = load_protocol(Path(__file__).parents[2] / "protocols" / f"{name}.yaml")
    return protocol, plan_cohort(protocol)


def test_nayebi2020_is_the_factorial_design_scaled_down():
    protocol, plan = _design("nayebi2020")
    # 4 rules x (2 architectures x 3 tasks + 1 architecture x 1 task) x 3 batch sizes x 2 seeds
    assert len(plan) == 4 * (2 * 3 + 1 * 1) * 3 * 2 == 168
    assert sorted(protocol.levels("learning_rule")) == sorted(["sgdm", "adam", "feedback_alignment", "information_alignment"])
    assert len(protocol.levels("batch_size")) == 3 and {s.replicate for s in plan.subjects} == {0, 1}
    objectives = {protocol.task_spec(task).objective for task in protocol.levels("task")}
    assert objectives == {"supervised", "contrastive"}  # supervised and self-supervised tasks


def test_nayebi2020_paper_scale_has_the_reference_architectures_and_batch_sizes():
    protocol, plan = _design("nayebi2020_paper_scale")
    assert len(plan) == 9 * 2 * 4 * 3 * 2 == 432
    assert protocol.levels("batch_size") == [128, 256, 512]
    kinds = {protocol.architecture_spec(a).type for a in protocol.levels("architecture")}
    assert kinds == {"knet", "alexnet", "resnet"}
    tasks = [protocol.task_spec(t) for t in protocol.levels("task")]
    assert {t.type for t in tasks} == {"cifar10"} and {t.objective for t in tasks} == {"supervised", "contrastive"}
    simclr = next(t for t in tasks if t.objective == "contrastive")
    assert simclr.contrastive.projection_dim == 128  # the reference's 2-layer head to 128-d


def test_paper_scale_architectures_read_32x32_cifar_images():
    from simlab.subjects.architectures import Network

    protocol, _ = _design("nayebi2020_paper_scale")
    for name in protocol.levels("architecture"):
        shapes = Network(protocol.architecture_spec(name), 10, "backprop").site_shapes((32, 32, 3))
        assert shapes["readout"][1] == (10,), name
