"""The opt-in calibration of the initial weights to the NITRO scaling (sknitro.nn.calibration)."""

import warnings

import numpy as np
import pytest

from sknitro import NitroCNNClassifier
from sknitro.nn.calibration import SPREAD, calibrate_scaling, calibrated_gain, mean_abs_deviation
from sknitro.nn.network import build_cnn

from conftest import weights_equal


def test_mean_abs_deviation_by_hand():
    # mean tdiv(16, 4) = 4; |1-4| + |2-4| + |3-4| + |10-4| = 12; tdiv(12, 4) = 3
    assert mean_abs_deviation(np.array([1, 2, 3, 10])) == 3
    # mean tdiv(-3, 2) = -1 (truncated, not floored): |0| + |-1| = 1; tdiv(1, 2) = 0
    assert mean_abs_deviation(np.array([-1, -2])) == 0
    assert mean_abs_deviation(np.array([[2**40, -2**40]])) == 2**40  # exact past float64's comfort
    assert mean_abs_deviation(np.zeros(0, dtype=np.int64)) == 0


def test_calibrated_gain_by_hand():
    assert calibrated_gain(np.array([0, 200]), 2304, 64) == SPREAD * 2304 // 100  # mad 100
    assert calibrated_gain(np.array([0, 10**9]), 2304, 64) == 1  # already past the spread
    assert calibrated_gain(np.zeros(4, dtype=np.int64), 2304, 8) == SPREAD * 2304  # dead: the largest gain
    assert calibrated_gain(np.zeros(4, dtype=np.int64), 2**30, 64) == 2**21 // 64  # capped: max|W| <= 2**21


@pytest.fixture(scope="module")
def images(digits):
    X, y = digits
    return (X * 15 - 120).astype(np.int8).reshape(-1, 1, 8, 8), y  # int8 pixels in [-120, 120]


def _pre_activation_spreads(network, x):
    spreads = []
    for stage in network.path:
        if hasattr(stage, "head"):
            spreads.append(mean_abs_deviation(stage.forward_train(x, None).pre_activation))
        x = stage.forward(x)
    return spreads


def test_calibration_wakes_every_block(images):
    x, _ = images
    net = build_cnn((1, 8, 8), [8, 8, "M", 16, 16, "M"], [32], 10, rng=np.random.default_rng(0))
    before = _pre_activation_spreads(net, x[:64])
    heads = [b.head.linear.weight.copy() for b in net.blocks]
    gains = calibrate_scaling(net, x[:64])
    after = _pre_activation_spreads(net, x[:64])
    # published init: past the first block the pre-activations barely move
    assert max(before[1:]) <= 2
    # calibrated: every block spreads about SPREAD on the batch it was calibrated on
    assert all(SPREAD // 2 <= s <= 2 * SPREAD for s in after), after
    assert len(gains) == 5 and all(g >= 1 for g in gains) and max(gains) > 10
    # the heads (and the divisors) keep the published initialisation
    assert all(np.array_equal(h, b.head.linear.weight) for h, b in zip(heads, net.blocks))
    assert all(b.forward_layer.weight_bound == np.abs(b.forward_layer.weight).max() for b in net.blocks)


def test_deep_cnn_learns_in_three_epochs_only_with_calibration(images):
    x, y = images
    accuracies = {}
    for calibrate in (False, True):
        clf = NitroCNNClassifier(architecture=[16, 16, "M", 32, "M"], hidden_layer_sizes=(64,),
                                 scale_calibration=calibrate, max_iter=3, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(x[:1400], y[:1400])
        accuracies[calibrate] = clf.score(x[1400:], y[1400:])
        if calibrate:  # every head learned too
            assert min(clf.head_accuracies_) > 0.7, clf.head_accuracies_
    assert accuracies[True] >= 0.75 and accuracies[True] >= accuracies[False] + 0.3, accuracies


def test_calibrated_fits_are_reproducible(images):
    x, y = images
    params = dict(architecture=[8, "M", 8], hidden_layer_sizes=(16,), scale_calibration=True, max_iter=1,
                  random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = NitroCNNClassifier(**params).fit(x[:300], y[:300])
        b = NitroCNNClassifier(**params).fit(x[:300], y[:300])
    assert weights_equal(a.weights_ + a.head_weights_, b.weights_ + b.head_weights_)
