"""Image architectures (KNet, AlexNet, ResNet v1/v2): presets, site plans, shapes, both credit
paths, layer-local probes, and a short training run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simlab.specs.rules import SGDMomentum
from simlab.rules.rules import make_rule
from simlab.subjects.architectures import Network
from simlab.specs.subjects import PRESET_ARCHITECTURES, AlexNetSpec, KNetSpec, ResNetSpec, TeacherSpec
from simlab.subjects.tasks import load_task
from simlab.training.population import train_population

SMALL = ["knet", "knet_lrn", "knet4", "alexnet", "alexnet_lrn", "resnet18", "resnet18v2", "resnet34", "resnet34v2"]
PAPER = [f"{name}_paper" for name in SMALL]
IMAGE = (8, 8, 3)


def _blocks(prefix_counts):
    names = []
    for stage, count in enumerate(prefix_counts, start=1):
        for block in range(1, count + 1):
            prefix = f"stage{stage}_block{block}"
            names.append(f"{prefix}_conv1")
            if block == 1 and stage > 1:
                names.append(f"{prefix}_shortcut")
            names.append(f"{prefix}_conv2")
    return names


EXPECTED_SITES = {
    "knet": ["conv_0", "conv_1", "conv_2", "readout"],
    "knet4": ["conv_0", "conv_1", "conv_2", "conv_3", "readout"],
    "alexnet": ["conv_0", "conv_1", "conv_2", "conv_3", "conv_4", "dense_0", "dense_1", "readout"],
    "resnet18": ["stem", *_blocks([2, 2, 2, 2]), "readout"],
    "resnet34": ["stem", *_blocks([3, 4, 6, 3]), "readout"],
}
EXPECTED_SITES |= {
    "knet_lrn": EXPECTED_SITES["knet"],
    "alexnet_lrn": EXPECTED_SITES["alexnet"],
    "resnet18v2": EXPECTED_SITES["resnet18"],
    "resnet34v2": EXPECTED_SITES["resnet34"],
}


def _x(n=2, shape=IMAGE, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32))


@pytest.mark.parametrize("name", SMALL + PAPER)
def test_presets_have_the_expected_sites(name):
    network = Network(PRESET_ARCHITECTURES[name], 10, "feedback")
    assert list(network.site_names) == EXPECTED_SITES[name.removesuffix("_paper")]
    assert len({*network.site_names}) == len(network.site_names)
    assert (len(network.site_names), name) in {(4, name), (5, name), (8, name), (21, name), (37, name)}


def test_site_shapes_of_small_and_paper_presets():
    knet = Network(PRESET_ARCHITECTURES["knet"], 10, "backprop")
    shapes = knet.site_shapes((16, 16, 3))  # conv 5x5 SAME, then 3x3 stride-2 pools: 16 -> 8 -> 4 -> 2
    assert shapes == {
        "conv_0": ((16, 16, 3), (16, 16, 8)),
        "conv_1": ((8, 8, 8), (8, 8, 8)),
        "conv_2": ((4, 4, 8), (4, 4, 16)),
        "readout": ((64,), (10,)),
    }
    assert knet.kernel_sizes((16, 16, 3))["conv_0"] == 5 * 5 * 3 * 8
    resnet = Network(PRESET_ARCHITECTURES["resnet18_paper"], 10, "backprop")
    shapes = resnet.site_shapes((224, 224, 3))
    assert shapes["stem"] == ((224, 224, 3), (112, 112, 64))
    assert shapes["stage1_block1_conv1"] == ((56, 56, 64), (56, 56, 64))  # after the stem's max pool
    assert shapes["stage2_block1_shortcut"] == ((56, 56, 64), (28, 28, 128))
    assert shapes["stage4_block2_conv2"] == ((7, 7, 512), (7, 7, 512))
    assert shapes["readout"] == ((512,), (10,))
    sizes = resnet.kernel_sizes((224, 224, 3))
    assert 11.0e6 < sum(sizes.values()) < 11.7e6  # ResNet-18's 11.2M conv and dense weights (10 classes)
    alexnet = Network(PRESET_ARCHITECTURES["alexnet_paper"], 10, "backprop")
    shapes = alexnet.site_shapes((224, 224, 3))
    assert shapes["conv_0"][1] == (56, 56, 96) and shapes["dense_1"] == ((4096,), (4096,))


def test_width_scales_channels():
    network = Network(KNetSpec(channels=[32, 32, 64], width=0.25, extra_conv=True), 10, "backprop")
    shapes = network.site_shapes(IMAGE)
    assert [shapes[f"conv_{i}"][1][-1] for i in range(4)] == [8, 8, 16, 16]
    resnet = Network(ResNetSpec(blocks=[1, 1], widths=[16, 32], stem_channels=16, width=0.5), 10, "backprop")
    assert resnet.site_shapes((32, 32, 3))["stage2_block1_conv2"][1] == (4, 4, 16)


def _loss(network, params, state, x, y):
    logits, _ = network.apply(params, state, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _random_params(network, x, seed=0):
    """Random params and feedback kernels with the network's shapes (no initializer compiled)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(network.init, jax.random.key(0), x)
    return jax.tree.map(lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), jnp.float32), shapes)


def test_every_small_preset_runs_forward():
    x = _x()
    for name in SMALL:
        network = Network(PRESET_ARCHITECTURES[name], 10, "feedback")
        params, state = _random_params(network, x)
        logits, sites = jax.jit(network.apply)(params, state, x)
        assert logits.shape == (2, 10) and bool(jnp.isfinite(logits).all()), name
        assert set(sites) == set(network.site_names)


# tiny members of each family (compiling gradients of the presets would take minutes)
TINY = {
    "knet": KNetSpec(channels=[4, 4, 6], lrn=True, extra_conv=True, pool="avg"),
    "alexnet": AlexNetSpec(channels=[4, 6, 6, 6, 4], kernel_sizes=[3, 3, 3, 3, 3], strides=[2, 1, 1, 1, 1],
                           hidden=[8, 8], lrn=True),
    "resnet_v1": ResNetSpec(version=1, blocks=[1, 2], widths=[4, 8], stem_channels=6, stem_kernel=3, stem_stride=1),
    "resnet_v2": ResNetSpec(version=2, blocks=[2, 1], widths=[4, 8], stem_channels=4, stem_kernel=3, stem_stride=1),
}


@pytest.mark.parametrize("name", list(TINY))
def test_both_credits_run_and_feedback_gradients_differ(name):
    spec = TINY[name]
    backprop, feedback = Network(spec, 10, "backprop"), Network(spec, 10, "feedback")
    x, y = _x(), jnp.asarray([1, 7])
    params, state = _random_params(feedback, x)
    assert set(state) == set(feedback.site_names)
    for site in feedback.site_names:
        assert state[site]["feedback"].shape == params[site]["w"].shape

    @jax.jit
    def both(params, state):
        logits_bp, _ = backprop.apply(params, {}, x)
        logits_fb, _ = feedback.apply(params, state, x)
        grad_bp = jax.grad(lambda p: _loss(backprop, p, {}, x, y))(params)
        grad_fb = jax.grad(lambda p: _loss(feedback, p, state, x, y))(params)
        return logits_bp, logits_fb, grad_bp, grad_fb

    logits_bp, logits_fb, grad_bp, grad_fb = both(params, state)
    assert logits_bp.shape == (2, 10)
    np.testing.assert_array_equal(np.asarray(logits_bp), np.asarray(logits_fb))  # forward uses W only
    for tree in (grad_bp, grad_fb):
        assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(tree))
    first, last = feedback.site_names[0], feedback.site_names[-1]
    # the readout's gradient needs no feedback; the first layer's error came through B's
    np.testing.assert_allclose(np.asarray(grad_fb[last]["w"]), np.asarray(grad_bp[last]["w"]), rtol=1e-5)
    assert not np.allclose(np.asarray(grad_fb[first]["w"]), np.asarray(grad_bp[first]["w"]), rtol=1e-2)


@pytest.mark.parametrize("name", ["resnet_v1", "resnet_v2", "alexnet"])
def test_probes_are_layer_local(name):
    """The gradient of a site's output with respect to another site's probe is zero, shortcuts
    included, so the paired rig's summed gradient is each site's own input-output derivative."""
    network = Network(TINY[name], 10, "backprop")
    x = _x(1)
    params, state = _random_params(network, x, seed=1)
    _, sites = network.apply(params, state, x)
    probes = {site: jnp.zeros_like(s.input) for site, s in sites.items()}

    def per_site_sums(probes):
        _, probed = network.apply(params, state, x, probes)
        return jnp.stack([jnp.sum(probed[site].output) for site in network.site_names])

    jacobian = jax.jit(jax.jacrev(per_site_sums))(probes)
    for j, probed_site in enumerate(network.site_names):
        rows = np.abs(np.asarray(jacobian[probed_site])).reshape(len(network.site_names), -1).sum(axis=1)
        others = np.delete(rows, j)
        assert not others.any(), (probed_site, dict(zip(np.delete(network.site_names, j), others)))
        assert rows[j] > 0, probed_site


def test_short_training_of_a_small_knet_reduces_the_loss():
    task = load_task(TeacherSpec(image_shape=[8, 8, 3], n_train=256, n_test=64, data_seed=1))
    rule = make_rule("sgdm", SGDMomentum(learning_rate=0.01))
    network = Network(KNetSpec(channels=[4, 4, 8]), task.n_classes, rule.credit)
    steps = 30
    result = train_population(network, rule, task, 32, steps, [0, steps], [3])
    assert result.status == ["ok"]

    def train_loss(session):
        params = jax.tree.map(lambda a: a[0, session], result.params)
        return float(_loss(network, params, {}, jnp.asarray(task.x_train), jnp.asarray(task.y_train)))

    assert train_loss(1) < 0.95 * train_loss(0)
