"""The cohort plan: product order, ids, seeds, populations, and the validate summary."""

import textwrap

from simlab.protocol import describe, parse_protocol, plan_cohort

QUICKSTART = textwrap.dedent(
    """\
    name: quickstart
    seed: 1
    cohort:
      architecture: [mlp, conv1d]
      task: [mnist1d]
      learning_rule: [sgdm, adam, feedback_alignment, information_alignment]
      batch_size: [32, 128]
      replicates: 3
    training:
      steps: 1500
    rigs:
      synapse: {units: all}
      ephys_sparse: {type: electrophysiology, units: 20, noise: 0.5, seed: 3}
    analyses:
      identify: {splits: 10}
    """
)


def test_plan_is_the_product_with_replicates_fastest():
    plan = plan_cohort(parse_protocol(QUICKSTART))
    assert len(plan) == 48 == len(plan.subjects)
    assert [s.index for s in plan.subjects] == list(range(48))
    first, second, fourth = plan.subjects[0], plan.subjects[1], plan.subjects[3]
    assert (first.id, first.replicate, first.seed) == ("mlp-mnist1d-sgdm-b32-s1000", 0, 1000)
    assert (second.id, second.replicate, second.seed) == ("mlp-mnist1d-sgdm-b32-s1001", 1, 1001)
    assert fourth.id == "mlp-mnist1d-sgdm-b128-s1000"
    assert plan.subjects[6].learning_rule == "adam"
    assert plan.subjects[24].architecture == "conv1d"
    assert plan.subjects[-1].id == "conv1d-mnist1d-information_alignment-b128-s1002"
    assert len({s.id for s in plan.subjects}) == 48


def test_populations_group_replicates_in_first_appearance_order():
    plan = plan_cohort(parse_protocol(QUICKSTART))
    assert len(plan.populations) == 16
    assert [p.id for p in plan.populations[:3]] == ["mlp-mnist1d-sgdm-b32", "mlp-mnist1d-sgdm-b128", "mlp-mnist1d-adam-b32"]
    population = plan.populations[2]
    assert (population.learning_rule, population.batch_size) == ("adam", 32)
    assert [s.index for s in population.subjects] == [6, 7, 8]
    assert [s for p in plan.populations for s in p.subjects] == list(plan.subjects)


def test_varied_factors():
    assert plan_cohort(parse_protocol(QUICKSTART)).varied_factors() == [
        "architecture",
        "learning_rule",
        "batch_size",
        "seed",
    ]
    single = QUICKSTART.replace("[mlp, conv1d]", "mlp").replace("replicates: 3", "replicates: 1")
    assert plan_cohort(parse_protocol(single)).varied_factors() == ["learning_rule", "batch_size"]


def test_describe_summarizes_what_will_run():
    protocol = parse_protocol(QUICKSTART)
    text = describe(protocol, plan_cohort(protocol))
    assert "quickstart" in text
    assert "48 subjects = 2 architectures x 1 task x 4 learning rules x 2 batch sizes x 3 replicates" in text
    assert "16 populations" in text
    assert "1500 steps" in text
    assert "21 sessions at steps 0, 75, 150, 225, 300, ..., 1425, 1500" in text
    assert "stimuli: 256" in text
    assert "  ephys_sparse: type=electrophysiology, units=20, noise=0.5, seed=3" in text
    assert "  identify: " in text


BLOCKS = textwrap.dedent(
    """\
    name: zoo
    cohort:
      - architecture: [mlp, conv1d]
        task: mnist1d
        learning_rule: [sgdm, adam]
        batch_size: 32
        replicates: 2
      - architecture: knet
        task: teacher_image
        learning_rule: sgdm
        batch_size: [16, 32]
        replicates: 1
    """
)


def test_cohort_blocks_pool_their_products_in_block_order():
    protocol = parse_protocol(BLOCKS)
    plan = plan_cohort(protocol)
    # 2 x 1 x 2 x 1 x 2 = 8, then 1 x 1 x 1 x 2 x 1 = 2
    assert len(plan) == 10 and len(plan.populations) == 6
    assert [s.index for s in plan.subjects] == list(range(10))
    assert plan.subjects[7].id == "conv1d-mnist1d-adam-b32-s1"
    assert [s.id for s in plan.subjects[8:]] == ["knet-teacher_image-sgdm-b16-s0", "knet-teacher_image-sgdm-b32-s0"]
    assert protocol.levels("architecture") == ["mlp", "conv1d", "knet"]
    assert protocol.levels("task") == ["mnist1d", "teacher_image"]
    text = describe(protocol, plan)
    assert "10 subjects in 2 blocks:" in text
    assert "block 1: 2 = 1 architecture x 1 task x 1 learning rule x 2 batch sizes x 1 replicate (knet on teacher_image)" in text
    assert parse_protocol(protocol.to_yaml()) == protocol


def test_a_single_block_list_plans_like_the_mapping():
    single = parse_protocol(QUICKSTART)
    block = QUICKSTART[QUICKSTART.index("  architecture"): QUICKSTART.index("training:")]
    listed_block = "  - " + block.strip().replace("\n  ", "\n    ") + "\n"
    listed = parse_protocol(QUICKSTART.replace(block, listed_block))
    assert isinstance(listed.cohort, list) and len(listed.cohort) == 1
    assert [s.id for s in plan_cohort(listed).subjects] == [s.id for s in plan_cohort(single).subjects]


def test_a_preset_architectures_own_table_entry_wins_over_its_familys(monkeypatch):
    from simlab.specs import rules

    planted = rules.DefaultsTable.model_validate({
        "defaults": {"feedback_alignment": {"knet": {"rates": {"learning_rate": 0.004}}}},
        "by_architecture": {"feedback_alignment": {"knet4": {"rates": {"learning_rate": 0.02}}}},
    })
    monkeypatch.setattr(rules, "defaults_table", lambda path=rules.DEFAULTS_FILE: planted)
    protocol = parse_protocol(BLOCKS)
    assert protocol.rule_hyperparameters("feedback_alignment", "knet4").learning_rate == 0.02
    assert protocol.rule_hyperparameters("feedback_alignment", "knet").learning_rate == 0.004
    assert protocol.rule_hyperparameters("feedback_alignment", "knet_lrn").learning_rate == 0.004  # family's
    # A protocol's own architecture named like a preset is not that preset: its family's entry.
    own = parse_protocol(BLOCKS + "architectures:\n  knet4: {type: knet, channels: [8, 8]}\n")
    assert own.rule_hyperparameters("feedback_alignment", "knet4").learning_rate == 0.004


def test_image_nets_get_the_calibrated_table_or_a_tenth_of_the_sgd_learning_rates_unless_overridden():
    from simlab.specs.rules import table_defaults

    protocol = parse_protocol(BLOCKS.replace("learning_rule: sgdm\n", "learning_rule: [sgdm, adam, feedback_alignment]\n"))
    assert protocol.rule_hyperparameters("sgdm", "mlp").learning_rate == 0.05
    assert table_defaults("sgdm", "knet") is None  # not in the shipped table: a tenth of 0.05
    assert protocol.rule_hyperparameters("sgdm", "knet").learning_rate == 0.005
    table = table_defaults("feedback_alignment", "knet", "knet").rates["learning_rate"]  # the shipped table's
    assert protocol.rule_hyperparameters("feedback_alignment", "knet").learning_rate == table
    assert protocol.rule_hyperparameters("adam", "knet") == protocol.rule_hyperparameters("adam", "mlp")
    assert protocol.rule_hyperparameters("sgdm", "knet").momentum == 0.9
    text = describe(protocol, plan_cohort(protocol))
    assert "  sgdm (mlp/mnist1d/b32, conv1d/mnist1d/b32): learning_rate=0.05," in text
    assert "  sgdm (knet/teacher_image/b16, knet/teacher_image/b32): learning_rate=0.005," in text
    overridden = parse_protocol(BLOCKS + "training:\n  rules:\n    sgdm: {learning_rate: 0.02}\n")
    assert overridden.rule_hyperparameters("sgdm", "knet").learning_rate == 0.02
    assert overridden.rule_hyperparameters("sgdm", "mlp").learning_rate == 0.02
