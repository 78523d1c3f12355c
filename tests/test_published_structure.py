"""The published networks' structure (algorithm.md §4): floor pooling, head windows from the
block's own output, heads before dropout and pooling, dropout placement."""

import numpy as np
import pytest

from sknitro.cnn import PRESETS
from sknitro.nn.blocks import FeatureDropout, FeaturePool, LinearBlock
from sknitro.nn.network import build_cnn, build_mlp
from sknitro.nn.optim import IntegerSGD
from sknitro.nn.training import one_hot


def _vgg8b(input_shape, **kwargs):
    return build_cnn(input_shape, PRESETS["vgg8b"]["features"], [1024], 10, head_dim=4096,
                     rng=np.random.default_rng(0), **kwargs)


def test_vgg8b_at_28_pixels_has_the_published_shapes():
    net = _vgg8b((1, 28, 28))
    # heads, by hand from §4 (window, padding, floor): 128 ch at 28 -> (8, 4), pad (4, 0): 128*4*7;
    # 256 at 28 -> (8, 8): 256*4*4; 256 at 14 -> (4, 4): 4*4; 512 at 14 -> (8, 4): 2*4;
    # 512 at 7 -> (4, 2): 2*4; 512 at 3 -> (2, 1): 2*3; then the dense block of 1024
    assert [b.head.linear.in_features for b in net.blocks] == [3584, 4096, 4096, 4096, 4096, 3072, 1024]
    assert [b.head_pool.window for b in net.blocks[:-1]] == [(8, 4), (8, 8), (4, 4), (8, 4), (4, 2), (2, 1)]
    assert [b.head_pool.padding for b in net.blocks[:-1]] == [(4, 0), (4, 4), (2, 2), (4, 2), (2, 1), (1, 0)]
    # feature path 28 -> 14 -> 7 -> 3 -> 1: the dense block reads 512 features
    assert net.blocks[-1].linear.in_features == 512
    assert net.output.linear.in_features == 1024


def test_vgg8b_at_32_pixels_reads_2048_features():
    net = _vgg8b((3, 32, 32))
    assert net.blocks[-1].linear.in_features == 512 * 2 * 2  # 32 -> 16 -> 8 -> 4 -> 2
    assert net.blocks[0].head.linear.in_features == 128 * 4 * 8  # (8, 4) on 32×32, no padding


def test_the_network_scores_the_same_whatever_the_dense_updates():
    # the forward pass of a CNN's dense block is that of an MLP's; only training repeats it
    net = _vgg8b((1, 28, 28))
    assert [b.updates_per_step for b in net.blocks] == [1] * 6 + [2]
    assert all(b.updates_per_step == 1 for b in build_mlp(20, [8, 8], 3, rng=np.random.default_rng(0)).blocks)


def _kinds(net):
    return [type(stage).__name__.replace("Feature", "").replace("Block", "") for stage in net.path]


def test_dropout_placement():
    features = [4, "M", 4, "M"]
    rng = np.random.default_rng(0)
    # fc dropout: after each dense block, and once before the last layer of the feature path
    net = build_cnn((1, 8, 8), features, [8, 8], 3, dropout=0.1, rng=rng)
    assert _kinds(net) == ["Conv", "Pool", "Conv", "Dropout", "Pool", "Linear", "Dropout", "Linear", "Dropout"]
    # conv dropout: after each conv block instead (fc dropout stays after the dense blocks)
    net = build_cnn((1, 8, 8), features, [8], 3, dropout=0.1, conv_dropout=0.2, rng=rng)
    assert _kinds(net) == ["Conv", "Dropout", "Pool", "Conv", "Dropout", "Pool", "Linear", "Dropout"]
    net = build_mlp(20, [8, 8], 3, dropout=0.5, rng=rng)
    assert _kinds(net) == ["Linear", "Dropout", "Linear", "Dropout"]
    assert isinstance(net.path[1], FeatureDropout) and isinstance(net.path[0], LinearBlock)


@pytest.mark.parametrize("build", ["mlp", "cnn"])
def test_heads_read_the_activation_before_dropout(build):
    """With nearly everything dropped, the first block and its head learn exactly as without
    dropout (their head reads the activation, and their input is the data), while the layers
    after the dropout see other inputs."""
    data = np.random.default_rng(1).integers(-100, 100, size=(16, 1, 6, 6)).astype(np.int8)
    labels = np.arange(16) % 3
    target = one_hot(labels, 3, 32)
    nets = []
    for dropout in (0.0, 0.9):
        rng = np.random.default_rng(0)
        if build == "mlp":
            net, x = build_mlp(36, [12, 12], 3, dropout=dropout, rng=rng), data.reshape(16, -1)
        else:
            net, x = build_cnn((1, 6, 6), [6, "M"], [12], 3, conv_dropout=dropout, rng=rng), data
        net.train_step(x, target, labels, IntegerSGD(8), np.random.default_rng(2))
        nets.append(net)
    plain, dropped = nets
    first = [plain.blocks[0], dropped.blocks[0]]
    assert np.array_equal(first[0].forward_layer.weight, first[1].forward_layer.weight)
    assert np.array_equal(first[0].head.linear.weight, first[1].head.linear.weight)
    # the next block reads the dropped values: its own update differs
    assert not np.array_equal(plain.blocks[1].forward_layer.weight, dropped.blocks[1].forward_layer.weight)


def test_feature_pool_is_floor_mode():
    pool = FeaturePool((2, 7, 7))
    x = np.arange(2 * 49, dtype=np.int8).reshape(1, 2, 7, 7)
    out = pool.forward(x)
    assert pool.output_shape((2, 7, 7)) == out.shape[1:] == (2, 3, 3)
    assert out[0, 0].tolist() == [[8, 10, 12], [22, 24, 26], [36, 38, 40]]  # the last row and column dropped

