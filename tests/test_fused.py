"""The compiled fused kernels (sknitro._fused): each against the NumPy path it replaces, on
random and extreme integers, and whole fits that must give identical weights either way."""

import joblib
import numpy as np
import pytest

import sknitro
from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.encoding import InputEncoder
from sknitro.nn import fused
from sknitro.nn.blocks import LinearHead
from sknitro.nn.functional import tdiv
from sknitro.nn.layers import ACTIVATIONS, IntegerLinear, make_activation, nitro_scale
from sknitro.nn.optim import IntegerSGD, integer_sgd_step

INT32_MAX = 2**31 - 1


def test_the_extension_is_built():
    # CI and the README's commands build it; without it every test below would only
    # compare the NumPy path with itself.
    assert fused.AVAILABLE, "sknitro._fused is missing: reinstall with a C compiler (pip install -e .)"


# -- the kernels, one by one -------------------------------------------------------------

DIVISORS = [1, 2, 3, 7, 255, 256, 640, 12345, 163840, 2**20 + 1, 2**30, 2**31 - 1]


@pytest.mark.parametrize("divisor", DIVISORS)
@pytest.mark.parametrize("decay_inv", [0, 1, 3, 5000, 2**31 - 1])
def test_sgd_update_matches_integer_sgd_step(divisor, decay_inv):
    rng = np.random.default_rng(divisor % 1000 + decay_inv % 7)
    weight = rng.integers(-2**29, 2**29, size=(37, 53)).astype(np.int32)
    limit = min(INT32_MAX, (2**30 - 1) * divisor)  # so that the new weights fit int32
    grad = rng.integers(-limit, limit + 1, size=weight.shape)
    grad.flat[:6] = [0, 1, -1, limit, -limit, divisor - 1]
    weight.flat[:3] = [2**29, -2**29, 0]
    expected = weight.copy()
    bound = integer_sgd_step(expected, grad, limit, 2**29, divisor, decay_inv)
    mirror = np.empty(weight.shape)
    assert fused._kernels.sgd_update(weight, grad.astype(np.float64), divisor, decay_inv, mirror) == bound
    np.testing.assert_array_equal(weight, expected)
    np.testing.assert_array_equal(mirror, expected.astype(np.float64))


@pytest.mark.parametrize("divisor", DIVISORS + [5, 9, 641, 6700417, 2**31 - 3])
def test_division_is_exact_around_multiples_of_the_divisor(divisor):
    # with zero weights and no decay the update is w = -tdiv(g, divisor): the multiply-and-
    # shift division must be exact right below, at and above every multiple it meets
    multiples = np.unique(np.linspace(0, INT32_MAX // divisor, 2000).astype(np.int64)) * divisor
    g = np.concatenate([multiples - 1, multiples, multiples + 1, [INT32_MAX, INT32_MAX - 1]])
    g = g[(g >= 0) & (g <= INT32_MAX)]
    g = np.concatenate([g, -g])
    weight = np.zeros(g.size, np.int32)
    fused._kernels.sgd_update(weight, g.astype(np.float64), divisor, 0, None)
    np.testing.assert_array_equal(weight, -tdiv(g, divisor))


@pytest.mark.parametrize("scale", [1, 2, 3, 100, 2**8 * 784, 2**8 * 4608, 2**24 - 1])
def test_scale_to_int8_matches_nitro_scale(scale):
    rng = np.random.default_rng(scale)
    z = rng.integers(-2**53 + 1, 2**53, size=(40, 25))
    z[0, :] = rng.integers(-300 * scale, 300 * scale, size=25)  # around the saturation
    z[1, :12] = [0, 1, -1, scale - 1, -(scale - 1), scale, -scale, 127 * scale, -127 * scale,
                 128 * scale - 1, -(128 * scale - 1), 128 * scale]
    expected = nitro_scale(z, scale)
    table = make_activation("nitro_relu").forward_table
    out, activated = np.empty(z.shape, np.int8), np.empty(z.shape, np.int8)
    fused._kernels.scale_to_int8(z.astype(np.float64), scale, out, table, activated)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(activated, table[expected.view(np.uint8)])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("wide", [False, True])
def test_activation_backward_matches_numpy(name, wide):
    # wide: deltas over the whole int32 range, whose products with the multipliers leave
    # int32 (the kernel's exact second pass); otherwise every product fits 32 bits
    activation = make_activation(name)
    rng = np.random.default_rng(len(name))
    limit = INT32_MAX if wide else INT32_MAX // activation.backward_divisor
    delta = rng.integers(-limit, limit + 1, size=(64, 50)).astype(np.int32)
    delta[0, :4] = [limit, -limit, 0, 1]
    if wide:
        delta[1, :2] = -(2**31)
    s = np.tile(np.arange(-128, 128, dtype=np.int16), 13)[:delta.size].reshape(delta.shape).astype(np.int8)
    with sknitro.config_context(fused_kernels=False):
        expected = activation.backward(delta, s)
    out, column_l1 = fused.activation_backward(delta, s, activation.backward_multiplier,
                                               activation.backward_divisor)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, expected)
    assert column_l1 == np.abs(expected.astype(np.int64)).sum(axis=0).max()
    assert activation.backward_and_column_l1(delta, s)[1] == column_l1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("propagate", [True, False])
def test_head_step_matches_the_numpy_head(seed, propagate):
    rng = np.random.default_rng(seed)
    batch, features, classes = [(64, 200, 10), (7, 33, 3), (1, 1, 2)][seed % 3]
    heads = [LinearHead(features, classes, 3000, scale_bits=8, rng=np.random.default_rng(seed))
             for _ in range(2)]
    x = rng.integers(-127, 128, size=(batch, features)).astype(np.int8)
    x[0, :] = -127  # extremes of the int8 inputs
    target = np.zeros((batch, classes), np.int8)
    target[np.arange(batch), rng.integers(0, classes, batch)] = [32, 127, 1][seed % 3]
    sgd = IntegerSGD(lr_inv=[1, 3, 256][seed % 3])
    decay = [0, 7, 8000][seed % 3]
    with sknitro.config_context(fused_kernels=False):
        expected = heads[0].learn(x, target, sgd, decay, propagate=propagate)
    fast = heads[1].learn(x, target, sgd, decay, propagate=propagate)
    np.testing.assert_array_equal(fast[0], expected[0])
    if propagate:
        np.testing.assert_array_equal(fast[1], expected[1])
    else:
        assert fast[1] is None and expected[1] is None
    assert fast[2] == expected[2]
    np.testing.assert_array_equal(heads[1].linear.weight, heads[0].linear.weight)
    assert heads[1].linear.weight_bound == heads[0].linear.weight_bound


def test_head_step_runs_only_on_int8_inputs_within_int32(spy):
    head = LinearHead(4, 2, 100, scale_bits=8, rng=np.random.default_rng(0))
    target = np.array([[32, 0]], np.int8)
    head.learn(np.ones((1, 4), np.int16), target, IntegerSGD(8), 0)  # dropout output: int16
    assert "head_step" not in spy.calls
    head.linear.weight[:] = 2**30 // 4
    head.linear.refresh_bounds()  # scores could pass int32: 128 * 2**28 * 4
    head.learn(np.ones((1, 4), np.int8), target, IntegerSGD(2**20), 0)
    assert "head_step" not in spy.calls
    small = LinearHead(4, 2, 100, scale_bits=8, rng=np.random.default_rng(0))
    small.learn(np.ones((1, 4), np.int8), target, IntegerSGD(8), 0)
    assert spy.calls["head_step"] == 1


def test_kernels_reject_buffers_of_the_wrong_size():
    weight = np.zeros(10, np.int32)
    with pytest.raises(ValueError, match="g: expected 10 items"):
        fused._kernels.sgd_update(weight, np.zeros(9), 3, 0, None)
    with pytest.raises(ValueError, match="divisor must be in"):
        fused._kernels.sgd_update(weight, np.zeros(10), 0, 0, None)
    with pytest.raises(ValueError, match="scale must be in"):
        fused._kernels.scale_to_int8(np.zeros(4), 2**24, np.zeros(4, np.int8))


# -- when they run, and when the NumPy path takes over ------------------------------------

def make_linear(weight):
    layer = IntegerLinear(weight.shape[1], weight.shape[0], 1, np.random.default_rng(0))
    layer.weight = weight.astype(np.int32)
    layer.refresh_bounds()
    return layer


def test_scaled_product_needs_the_32_bit_bound():
    layer = make_linear(np.ones((3, 4)))
    x = np.full((2, 4), 100, np.int8)

    def scaled(scale):
        return fused.scaled_product(x, layer.weight, layer.weight_bound, scale)

    assert scaled(2**24 - 1) is not None
    assert scaled(2**24) is None  # 128 * scale would pass 2**31
    with sknitro.config_context(fused_kernels=False):
        assert scaled(100) is None
    with sknitro.config_context(gemm="integer"):
        assert scaled(100) is None
    # and the layer's own method gives the same integers on either path
    np.testing.assert_array_equal(layer.scaled_forward(x, 2**24), nitro_scale(x.astype(np.int64) @ layer.weight.T, 2**24))


def test_sgd_update_declines_gradients_past_int32():
    layer = make_linear(np.ones((3, 4)))
    delta, x = np.ones((2, 3), np.int32), np.ones((2, 4), np.int8)
    assert not fused.sgd_update(layer, delta, x, INT32_MAX + 1, 1, 0)
    assert fused.sgd_update(layer, delta, x, INT32_MAX, 1, 0)
    np.testing.assert_array_equal(layer.weight, np.full((3, 4), -1))  # 1 - 2 // 1
    np.testing.assert_array_equal(layer.weight64, np.full((3, 4), -1.0))
    assert layer.weight_bound == 1


# -- whole fits ------------------------------------------------------------------------------

def fitted_weights(estimator):
    return estimator.weights_ + estimator.head_weights_


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)


@pytest.fixture(params=["vnni", "float64"])
def products(request, monkeypatch):
    """Runs a test on each product path of the kernels: VNNI (on CPUs that have it) and
    float64 BLAS. Returns the name of the update kernel that path calls."""
    if request.param == "vnni" and not fused.VNNI:
        pytest.skip("this CPU has no AVX-512 VNNI")
    if request.param == "float64":
        monkeypatch.setattr(fused, "VNNI", False)
    return "units_sgd_update" if request.param == "vnni" else "sgd_update"


def test_fit_gives_identical_weights_with_and_without_the_kernels(spy, products, digits_small):
    X, y = digits_small
    params = dict(hidden_layer_sizes=(40, 20), max_iter=4, random_state=5)
    fast = NitroMLPClassifier(**params).fit(X, y)
    assert spy.calls[products] > 0 and spy.calls["scale_to_int8"] > 0
    assert spy.calls["activation_backward"] > 0 and spy.calls["head_step"] > 0
    with sknitro.config_context(fused_kernels=False):
        numpy_path = NitroMLPClassifier(**params).fit(X, y)
    with sknitro.config_context(gemm="integer"):
        integer_path = NitroMLPClassifier(**params).fit(X, y)
    assert_same_weights(fitted_weights(fast), fitted_weights(numpy_path))
    assert_same_weights(fitted_weights(fast), fitted_weights(integer_path))
    np.testing.assert_array_equal(fast.decision_function(X), integer_path.decision_function(X))


def test_cnn_dense_part_uses_the_kernels_with_identical_weights(spy, products, digits):
    X, y = digits
    X = X.reshape(-1, 1, 8, 8)[:300]
    params = dict(architecture=[4, "M"], hidden_layer_sizes=(16,), max_iter=2, random_state=1)
    fast = NitroCNNClassifier(**params).fit(X, y[:300])
    assert spy.calls[products] > 0
    with sknitro.config_context(fused_kernels=False):
        slow = NitroCNNClassifier(**params).fit(X, y[:300])
    assert_same_weights(fitted_weights(fast), fitted_weights(slow))


def test_conv_blocks_use_the_scaling_kernel_with_identical_weights(spy, digits):
    X, y = digits
    X = X.reshape(-1, 1, 8, 8)[:300]
    params = dict(architecture=[6, "M", 8], hidden_layer_sizes=(), max_iter=2, conv_dropout=0.1,
                  random_state=3)
    fast = NitroCNNClassifier(**params).fit(X, y[:300])
    assert spy.calls["scale_to_int8"] > 0
    with sknitro.config_context(gemm="integer"):
        exact = NitroCNNClassifier(**params).fit(X, y[:300])
    assert_same_weights(fitted_weights(fast), fitted_weights(exact))
    np.testing.assert_array_equal(fast.decision_function(X), exact.decision_function(X))


def test_weight_copies_live_for_one_epoch_and_are_never_saved(tmp_path, digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, y)
    layers = clf.network_.layers()
    assert all(getattr(layer, name) is None for layer in layers for name in IntegerLinear.CACHES)
    # copies left over (as during an epoch) are not pickled
    layers[0].weight64 = layers[0].weight.astype(np.float64)
    layers[0].weight_units = layers[0].weight.copy()
    layers[0].input_units = (X, X, 0)
    joblib.dump(clf, tmp_path / "m.joblib")
    loaded = joblib.load(tmp_path / "m.joblib").network_.layers()[0]
    assert all(getattr(loaded, name) is None for name in IntegerLinear.CACHES)


def test_weights_changed_between_epochs_are_used(digits_small):
    # the float64 copy must never outlive a change of the integer weights
    X, y = digits_small
    params = dict(hidden_layer_sizes=(16,), random_state=0)
    a = NitroMLPClassifier(**params).partial_fit(X, y, classes=np.unique(y))
    b = NitroMLPClassifier(**params).partial_fit(X, y, classes=np.unique(y))
    for clf in (a, b):
        weights = clf.network_.get_weights()
        weights[0] = tdiv(weights[0], 2).astype(np.int32)
        clf.network_.set_weights(weights)
    a.partial_fit(X, y)
    with sknitro.config_context(fused_kernels=False):
        b.partial_fit(X, y)
    assert_same_weights(fitted_weights(a), fitted_weights(b))


@pytest.mark.parametrize("fused_kernels", [True, False])
def test_step_refuses_int32_overflow_and_leaves_the_weights_alone(spy, fused_kernels):
    layer = make_linear(np.array([[2**31 - 10, 5]]))
    before = layer.weight.copy()
    delta, x = np.array([[-100]], np.int32), np.array([[1, 1]], np.int8)  # G = [[-100, -100]]
    with sknitro.config_context(fused_kernels=fused_kernels), pytest.raises(OverflowError):
        IntegerSGD(lr_inv=1).step(layer, delta, x, amp=1, decay_inv=0)
    np.testing.assert_array_equal(layer.weight, before)
    assert "sgd_update" not in spy.calls


def test_image_encoding_lookup_matches_take(spy):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    encoder = InputEncoder().fit(images)
    fast = encoder.transform(images)
    assert spy.calls["lookup_uint8"] > 0
    with sknitro.config_context(fused_kernels=False):
        slow = encoder.transform(images)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast, np.take(encoder.lookup_table[0], images))
