"""The "c" kernels (CompiledKernels: products on float64 BLAS, the passes around them fused in
C, sknitro._fused) against the reference NumpyKernels, bit for bit.

Each C function is held to the NumPy rule it replaces on random and extreme integers; each
method of the "c" kernels to the reference's, both where it runs its C function and where
its bounds make it hand the work back to its parent (``super()``), which the ``spy`` fixture
tells apart; and whole fits must give identical weights on every implementation this
machine runs ("c", and the pair products of tests/test_pairs.py).
"""

import copy

import joblib
import numpy as np
import pytest

import sknitro
from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.encoding import InputEncoder
from sknitro.nn import kernels
from sknitro.nn.blocks import LinearHead
from sknitro.nn.conv import MaxPool2d
from sknitro.nn.functional import tdiv
from sknitro.nn.kernels import CompiledKernels, LayerCopies, PairForm, PairKernels, nitro_scale
from sknitro.nn.layers import ACTIVATIONS, IntegerLinear, make_activation
from sknitro.nn.optim import IntegerSGD, integer_sgd_step

INT32_MAX = 2**31 - 1
_fused = kernels._compiled  # the module itself: the spy fixture replaces kernels._compiled
NUMPY = kernels.NUMPY
ISA_NAMES = {"avx2": "AVX2", "vnni": "AVX-512 VNNI"}


def compiled(name):
    """``name`` as a test parameter, skipped where this machine cannot run it."""
    reason = "sknitro._fused is not built" if name == "c" else f"this CPU has no {ISA_NAMES[name]}"
    return pytest.param(name, id=name, marks=pytest.mark.skipif(name not in kernels.AVAILABLE, reason=reason))


COMPILED = [compiled(name) for name in ("c", "avx2", "vnni")]
needs_c = pytest.mark.skipif("c" not in kernels.AVAILABLE, reason="sknitro._fused is not built")


@pytest.fixture
def c_kernels():
    if "c" not in kernels.AVAILABLE:
        pytest.skip("sknitro._fused is not built")
    return kernels.IMPLEMENTATIONS["c"]


def test_the_extension_is_built():
    # CI and the README's commands build it; without it every test below would only
    # compare the NumPy path with itself (or be skipped)
    assert _fused is not None, "sknitro._fused is missing: reinstall with a C compiler (pip install -e .)"
    assert "c" in kernels.AVAILABLE


@needs_c
def test_the_implementations_this_machine_runs():
    isas = _fused.pair_isas()  # fastest first
    assert set(isas) <= {"avx2", "vnni"} and len(set(isas)) == len(isas)
    assert kernels.AVAILABLE == ("numpy", "c") + tuple(reversed(isas))
    assert kernels.BEST == (isas[0] if isas else "c")
    assert type(kernels.IMPLEMENTATIONS["c"]) is CompiledKernels
    assert all(type(kernels.IMPLEMENTATIONS[isa]) is PairKernels for isa in isas)
    assert kernels.select() is kernels.IMPLEMENTATIONS[kernels.BEST]
    for name in kernels.AVAILABLE:
        assert kernels.IMPLEMENTATIONS[name].name == name
        with sknitro.config_context(kernels=name):
            assert kernels.select() is kernels.IMPLEMENTATIONS[name]
            # both pin the reference, whatever kernels say
            with sknitro.config_context(fused_kernels=False):
                assert kernels.select() is NUMPY
            with sknitro.config_context(gemm="integer"):
                assert kernels.select() is NUMPY
    for missing in {"avx2", "vnni"} - set(isas):
        with pytest.raises(ValueError, match="cannot run here"):
            sknitro.set_config(kernels=missing)
    assert kernels.select() is kernels.IMPLEMENTATIONS[kernels.BEST]


# -- the C functions, one by one ---------------------------------------------------------

DIVISORS = [1, 2, 3, 7, 255, 256, 640, 12345, 163840, 2**20 + 1, 2**30, 2**31 - 1]


@needs_c
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
    assert _fused.sgd_update(weight, grad.astype(np.float64), divisor, decay_inv, mirror) == bound
    np.testing.assert_array_equal(weight, expected)
    np.testing.assert_array_equal(mirror, expected.astype(np.float64))


@needs_c
@pytest.mark.parametrize("divisor", DIVISORS + [5, 9, 641, 6700417, 2**31 - 3])
def test_division_is_exact_around_multiples_of_the_divisor(divisor):
    # with zero weights and no decay the update is w = -tdiv(g, divisor): the multiply-and-
    # shift division must be exact right below, at and above every multiple it meets
    multiples = np.unique(np.linspace(0, INT32_MAX // divisor, 2000).astype(np.int64)) * divisor
    g = np.concatenate([multiples - 1, multiples, multiples + 1, [INT32_MAX, INT32_MAX - 1]])
    g = g[(g >= 0) & (g <= INT32_MAX)]
    g = np.concatenate([g, -g])
    g = g.reshape(2, -1)  # (g and -g: an even count)
    weight = np.zeros(g.shape, np.int32)
    _fused.sgd_update(weight, g.astype(np.float64), divisor, 0, None)
    np.testing.assert_array_equal(weight, -tdiv(g, divisor))


@needs_c
@pytest.mark.parametrize("scale", [1, 2, 3, 100, 2**8 * 784, 2**8 * 4608, 2**24 - 1])
@pytest.mark.parametrize("z_type", [np.float64, np.int32])
def test_scale_to_int8_matches_nitro_scale(scale, z_type):
    # float64 z: the products of float64 BLAS, up to 2**53; int32 z: the pair products'
    rng = np.random.default_rng(scale)
    limit = 2**53 - 1 if z_type is np.float64 else INT32_MAX
    z = rng.integers(-limit, limit + 1, size=(40, 25))
    z[0, :] = rng.integers(-300 * scale, 300 * scale, size=25).clip(-limit, limit)  # around the saturation
    z[1, :12] = [0, 1, -1, scale - 1, -(scale - 1), scale, -scale, 127 * scale, -127 * scale,
                 128 * scale - 1, -(128 * scale - 1), 128 * scale]
    z[2, :2] = [limit, -limit - (z_type is np.int32)]
    expected = nitro_scale(z, scale)
    table = make_activation("nitro_relu").forward_table
    z, expected = z.ravel(), expected.ravel()  # scale_to_int8 takes flat arrays
    out, activated = np.empty(z.shape, np.int8), np.empty(z.shape, np.int8)
    _fused.scale_to_int8(z.astype(z_type), scale, out, table, activated)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(activated, table[expected.view(np.uint8)])
    out = np.empty(z.shape, np.int8)
    _fused.scale_to_int8(z.astype(z_type), scale, out)
    np.testing.assert_array_equal(out, expected)


@needs_c
def test_the_c_functions_reject_buffers_of_the_wrong_shape():
    weight = np.full((2, 5), 7, np.int32)
    with pytest.raises(ValueError, match=r"g: expected shape \(2, 5\), got \(2, 4\)"):
        _fused.sgd_update(weight, np.zeros((2, 4)), 3, 0, None)
    with pytest.raises(ValueError, match=r"g: expected shape \(2, 5\), got \(5, 2\)"):
        _fused.sgd_update(weight, np.zeros((5, 2)), 3, 0, None)  # as many items, another shape
    with pytest.raises(ValueError, match=r"mirror: expected shape \(2, 5\), got \(1, 10\)"):
        _fused.sgd_update(weight, np.zeros((2, 5)), 3, 0, np.zeros((1, 10)))
    with pytest.raises(ValueError, match="dimensions"):
        _fused.sgd_update(np.zeros(10, np.int32), np.zeros(10), 3, 0, None)  # 2-D only
    with pytest.raises(ValueError, match="divisor must be in"):
        _fused.sgd_update(weight, np.zeros((2, 5)), 0, 0, None)
    assert (weight == 7).all()  # nothing written by a call that raised
    with pytest.raises(ValueError, match="scale must be in"):
        _fused.scale_to_int8(np.zeros(4), 2**24, np.zeros(4, np.int8))
    with pytest.raises(ValueError, match="dimensions"):
        _fused.scale_to_int8(np.zeros((2, 2), np.int32), 3, np.zeros((2, 2), np.int8))  # 1-D only


# -- the "c" kernels against the reference, and when they hand the work back -----------------

def make_linear(weight, bias=None):
    layer = IntegerLinear.from_weight(np.array(weight, dtype=np.int32))
    if bias is not None:
        layer.bias = np.array(bias, dtype=np.int32)
        layer.refresh_bounds()
    return layer


def copy_of(layer):
    return make_linear(layer.weight.copy(), None if layer.bias is None else layer.bias.copy())


@pytest.mark.parametrize("inputs", [1, 7, 64, 783])
def test_scaled_forward_matches_the_reference(c_kernels, spy, inputs):
    rng = np.random.default_rng(inputs)
    table = make_activation("pocket_tanh").forward_table
    x = rng.integers(-128, 128, (33, inputs)).astype(np.int8)
    x[0] = -128
    for bound in (1, 2**15, 2**24, 2**31 - 1):  # the last one: products up to 2**53 / 2
        layer = make_linear(rng.integers(-bound, bound + 1, (9, inputs)))
        for scale in (1, 2**8 * inputs, 2**24 - 1):
            expected = nitro_scale(x.astype(np.int64) @ layer.weight.T.astype(np.int64), scale)
            np.testing.assert_array_equal(NUMPY.scaled_forward(layer, x, scale), expected)
            np.testing.assert_array_equal(c_kernels.scaled_forward(layer, x, scale), expected)
            scaled, activated = c_kernels.scaled_forward(layer, x, scale, table)
            np.testing.assert_array_equal(scaled, expected)
            np.testing.assert_array_equal(activated, table[expected.view(np.uint8)])
        # the float64 copy an update of the "c" kernels leaves, read instead of W
        layer.kernel_cache = LayerCopies(float64=layer.weight.astype(np.float64))
        np.testing.assert_array_equal(c_kernels.scaled_forward(layer, x, 5), nitro_scale(
            x.astype(np.int64) @ layer.weight.T.astype(np.int64), 5))
    assert spy.calls["scale_to_int8"] == 4 * (3 * 2 + 1)


def _forward_cases():
    x = np.full((2, 4), 100, np.int8)
    wide = 2**15 + 1  # 128 * (2**31 - 1) * (2**15 + 1) > 2**53: float64 sums may be inexact
    return {
        # (layer, x, scale, whether the C function runs)
        "128 * scale below 2**31": (make_linear(np.ones((3, 4))), x, 2**24 - 1, True),
        "128 * scale past 2**31": (make_linear(np.ones((3, 4))), x, 2**24, False),
        "bias": (make_linear(np.ones((3, 4)), bias=[1, -2, 3]), x, 7, False),
        "past float64's exact integers": (make_linear(np.full((2, wide), INT32_MAX)),
                                          np.full((3, wide), -128, np.int8), 2**24 - 1, False),
        "int16 input": (make_linear(np.ones((3, 4))), x.astype(np.int16), 7, True),
        "just within float64's exact integers": (make_linear(np.full((2, wide - 1), INT32_MAX)),
                                                 np.full((3, wide - 1), -128, np.int8), 2**24 - 1, True),
    }


@pytest.mark.parametrize("case", list(_forward_cases()))
def test_scaled_forward_hands_back_outside_its_bounds(c_kernels, spy, case):
    layer, x, scale, runs = _forward_cases()[case]
    z = x.astype(np.int64) @ layer.weight.T.astype(np.int64) + (0 if layer.bias is None else layer.bias)
    expected = nitro_scale(z, scale)
    np.testing.assert_array_equal(c_kernels.scaled_forward(layer, x, scale), expected)
    assert spy.calls.get("scale_to_int8", 0) == runs
    # and the layer's own method, on every implementation and setting, gives the same integers
    for settings in [{"kernels": name} for name in kernels.AVAILABLE] + [{"fused_kernels": False},
                                                                        {"gemm": "integer"}]:
        with sknitro.config_context(**settings):
            layer.drop_copies()
            np.testing.assert_array_equal(layer.scaled_forward(x, scale), expected, err_msg=str(settings))


def test_the_settings_that_pin_the_reference_call_no_c_function(spy):
    layer, x = make_linear(np.ones((3, 4))), np.full((2, 4), 100, np.int8)
    for settings in ({"fused_kernels": False}, {"gemm": "integer"}):
        with sknitro.config_context(kernels="auto", **settings):
            np.testing.assert_array_equal(layer.scaled_forward(x, 100),
                                          nitro_scale(x.astype(np.int64) @ layer.weight.T, 100))
    assert spy.calls == {}


@needs_c
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("wide", [False, True])
def test_activation_backward_matches_the_reference(c_kernels, spy, name, wide):
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
    multiplier, divisor = activation.backward_multiplier, activation.backward_divisor
    expected, *nones = NUMPY.activation_backward(delta, s, multiplier, divisor)
    assert nones == [None, None]
    out, column_l1, largest = c_kernels.activation_backward(delta, s, multiplier, divisor)
    assert out.dtype == np.int32 and spy.calls["activation_backward"] == 1
    np.testing.assert_array_equal(out, expected)
    magnitudes = np.abs(expected.astype(np.int64))
    assert column_l1 == magnitudes.sum(axis=0).max() and largest == magnitudes.max()
    # through the activation: the bounds come with the C function only
    with sknitro.config_context(kernels="c"):
        out, *bounds = activation.backward_and_bounds(delta, s)
    np.testing.assert_array_equal(out, expected)
    assert bounds == [column_l1, largest]
    with sknitro.config_context(kernels="numpy"):
        out, *nones = activation.backward_and_bounds(delta, s)
    np.testing.assert_array_equal(out, expected)
    assert nones == [None, None]


@needs_c
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_blocks_hand_the_activation_backwards_bounds_to_the_update(monkeypatch, kind):
    # the update reads max|delta| and the column L1 norms that the activation's backward
    # computed on the way: they prove its kernels exact without another pass over delta
    from sknitro.nn.blocks import ConvBlock, LinearBlock
    from sknitro.nn.layers import NitroReLU

    rng = np.random.default_rng(3)
    if kind == "dense":
        block = LinearBlock(40, 30, 4, NitroReLU(4), scale_bits=0, rng=rng)
        x = rng.integers(-128, 128, (16, 40)).astype(np.int8)
    else:
        block = ConvBlock((3, 8, 8), 6, 4, NitroReLU(4), scale_bits=0, rng=rng, head_dim=24, head_pooling="max")
        x = rng.integers(-8, 9, (5, 3, 8, 8)).astype(np.int8)  # no saturated s: the gradient flows
    target = np.where(np.eye(4, dtype=bool)[rng.integers(0, 4, len(x))], 32, 0).astype(np.int8)
    updates = []
    original = CompiledKernels.sgd_update

    def recording_update(self, layer, delta, x, divisor, decay_inv, delta_bound=None, column_l1=None):
        updates.append((layer, delta.copy(), delta_bound, column_l1))
        return original(self, layer, delta, x, divisor, decay_inv, delta_bound, column_l1)

    monkeypatch.setattr(CompiledKernels, "sgd_update", recording_update)
    with sknitro.config_context(kernels="c"):
        block.learn(block.forward_train(x, rng), target, IntegerSGD(64), 10, fwd_decay_inv=0, head_decay_inv=0)
    (layer, delta, delta_bound, column_l1), = [update for update in updates if update[0] is not block.head.linear]
    magnitudes = np.abs(delta.astype(np.int64))
    assert magnitudes.max() > 0
    assert delta_bound == magnitudes.max() and column_l1 == magnitudes.sum(axis=0).max()


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
def test_elementwise_passes_in_chunks_on_threads(threads):
    # 3001 x 50 items: scale_to_int8 in chunks of 2**15 items, activation_backward in chunks of
    # 655 whole rows, the last of each partial; on 2 threads the chunks run in parallel. Each
    # column's L1 norm adds up across the chunks: column 7's is the largest; the largest
    # magnitude lies in the last chunk.
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(threads)
    activation = make_activation("nitro_relu")
    multiplier, divisor = activation.backward_multiplier, activation.backward_divisor
    delta = rng.integers(-(2**20), 2**20, size=(3001, 50)).astype(np.int32)
    s = rng.integers(-128, 128, size=delta.shape).astype(np.int8)
    delta[:, 7], s[:, 7] = 2**20, 100
    delta[0, 3], s[0, 3] = 2**30, 100  # the first chunk's products leave int32: its exact 64-bit pass
    delta[-1, 4], s[-1, 4] = -(2**31), 100
    z = rng.integers(-(2**31), 2**31, size=delta.shape).astype(np.int32)
    table = activation.forward_table
    expected_delta = NUMPY.activation_backward(delta, s, multiplier, divisor)[0]
    magnitudes = np.abs(expected_delta.astype(np.int64))
    expected_l1 = magnitudes.sum(axis=0)
    assert expected_l1.argmax() == 7 and 2**30 * int(multiplier[100]) > INT32_MAX
    assert magnitudes.argmax() == magnitudes.size - 50 + 4
    with threadpool_limits(threads):
        out = np.empty_like(delta)
        column_l1, largest = _fused.activation_backward(delta, s, multiplier, divisor, out)
        scaled, activated = np.empty(z.size, np.int8), np.empty(z.size, np.int8)
        _fused.scale_to_int8(z.ravel(), 2**8 * 784, scaled, table, activated)
        scaled, activated = scaled.reshape(z.shape), activated.reshape(z.shape)
    np.testing.assert_array_equal(out, expected_delta)
    assert column_l1 == expected_l1.max() and largest == magnitudes.max()
    np.testing.assert_array_equal(scaled, nitro_scale(z, 2**8 * 784))
    np.testing.assert_array_equal(activated, table[scaled.view(np.uint8)])


def _backward_cases():
    rng = np.random.default_rng(1)
    delta = rng.integers(-2**20, 2**20, (6, 5)).astype(np.int32)
    delta[0, 0] = INT32_MAX
    s = rng.integers(-128, 128, (6, 5)).astype(np.int8)
    activation = make_activation("nitro_relu")
    m, d = activation.backward_multiplier, activation.backward_divisor
    return {
        # (delta, s, multiplier, divisor): each hands the work back to the reference
        "int64 delta": (delta.astype(np.int64), s, m, d),
        "int16 delta": (delta.astype(np.int16), s, m, d),
        "strided delta": (np.repeat(delta, 2, axis=1)[:, ::2], s, m, d),
        "strided s": (delta, np.repeat(s, 2, axis=1)[:, ::2], m, d),
        "divisor past 32 bits": (delta, s, m.astype(np.int64) * 2**29, d * 2**29),  # 4 * 2**29 = 2**31
        "a 0-d delta": (np.array(-12345, np.int32), np.array(-3, np.int8), m, d),
    }


@pytest.mark.parametrize("case", list(_backward_cases()))
def test_activation_backward_hands_back_outside_its_bounds(c_kernels, spy, case):
    delta, s, multiplier, divisor = _backward_cases()[case]
    expected, *_ = NUMPY.activation_backward(delta, s, multiplier, divisor)
    by_definition = tdiv(delta.astype(np.int64) * multiplier[s.view(np.uint8)].astype(np.int64), divisor)
    np.testing.assert_array_equal(expected, by_definition)
    out, *bounds = c_kernels.activation_backward(delta, s, multiplier, divisor)
    np.testing.assert_array_equal(out, expected)
    assert bounds == [None, None] and "activation_backward" not in spy.calls


@pytest.mark.parametrize("implementation", COMPILED)
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("propagate", [True, False])
def test_head_step_matches_the_reference(spy, implementation, seed, propagate):
    rng = np.random.default_rng(seed)
    # the kernel sums 16 classes and 4 rows at a time: one block and rows past the batch,
    # 37 classes in three blocks
    batch, features, classes = [(64, 200, 10), (7, 33, 3), (1, 1, 2), (10, 50, 37)][seed % 4]
    heads = [LinearHead(features, classes, 3000, scale_bits=8, rng=np.random.default_rng(seed))
             for _ in range(2)]
    x = rng.integers(-127, 128, size=(batch, features)).astype(np.int8)
    x[0, :] = -127  # extremes of the int8 inputs
    target = np.zeros((batch, classes), np.int8)
    target[np.arange(batch), rng.integers(0, classes, batch)] = [32, 127, 1][seed % 3]
    sgd = IntegerSGD(lr_inv=[1, 3, 256][seed % 3])
    decay = [0, 7, 8000][seed % 3]
    with sknitro.config_context(kernels="numpy"):
        expected = heads[0].learn(x, target, sgd, decay, propagate=propagate)
    with sknitro.config_context(kernels=implementation):
        fast = heads[1].learn(x, target, sgd, decay, propagate=propagate)
    assert spy.calls["head_step"] == 1  # heads run the same C function on every compiled implementation
    np.testing.assert_array_equal(fast[0], expected[0])
    if propagate:
        np.testing.assert_array_equal(fast[1], expected[1])
    else:
        assert fast[1] is None and expected[1] is None
    assert fast[2] == expected[2]
    np.testing.assert_array_equal(heads[1].linear.weight, heads[0].linear.weight)
    assert heads[1].linear.weight_bound == heads[0].linear.weight_bound


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(64, 1024, 10), (45, 700, 11)])
def test_head_step_on_threads_matches_the_reference(threads, shape):
    # past the work from which the head's loops run on the threads (a compact CNN's first
    # head, and rows, classes and feature blocks that do not divide evenly)
    from threadpoolctl import threadpool_limits

    batch, features, classes = shape
    rng = np.random.default_rng(threads)
    heads = [LinearHead(features, classes, 3000, scale_bits=8, rng=np.random.default_rng(batch)) for _ in range(2)]
    x = rng.integers(-128, 128, size=(batch, features)).astype(np.int8)
    target = np.zeros((batch, classes), np.int8)
    target[np.arange(batch), rng.integers(0, classes, batch)] = 32
    with sknitro.config_context(kernels="numpy"):
        expected = heads[0].learn(x, target, IntegerSGD(lr_inv=3), 7, propagate=True)
    with sknitro.config_context(kernels="c"), threadpool_limits(threads):
        fast = heads[1].learn(x, target, IntegerSGD(lr_inv=3), 7, propagate=True)
    for got, want in zip(fast, expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(heads[1].linear.weight, heads[0].linear.weight)
    assert heads[1].linear.weight_bound == heads[0].linear.weight_bound


def test_head_step_runs_only_on_int8_inputs_within_int32(c_kernels, spy):
    target = np.array([[32, 0]], np.int8)

    def learn_both(x, weight, lr_inv):
        # the "c" kernels and the reference, from the same weights: identical either way
        heads = [LinearHead(4, 2, 100, scale_bits=8, rng=np.random.default_rng(0)) for _ in range(2)]
        for head in heads:
            head.linear.weight[:] = weight
            head.linear.refresh_bounds()
        results = [kernels_.head_step(head.linear, x, target, head.scale, lr_inv, 0, True)
                   for kernels_, head in zip((NUMPY, c_kernels), heads)]
        for expected, got in zip(*results):
            np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(heads[1].linear.weight, heads[0].linear.weight)
        assert heads[1].linear.weight_bound == heads[0].linear.weight_bound

    learn_both(np.ones((1, 4), np.int16), 7, 8)  # dropout output: int16
    assert "head_step" not in spy.calls
    learn_both(np.ones((1, 4), np.int8), 2**30 // 4, 2**20)  # scores could pass int32: 128 * 2**28 * 4
    assert "head_step" not in spy.calls
    learn_both(np.ones((1, 4), np.int8), 7, 2**31)  # a divisor past the 32-bit division
    assert "head_step" not in spy.calls
    learn_both(np.ones((1, 4), np.int8), 7, 8)
    assert spy.calls["head_step"] == 1


def test_sgd_update_matches_the_reference(c_kernels, spy):
    rng = np.random.default_rng(3)
    for inputs, outputs, batch in [(64, 40, 32), (7, 3, 1), (783, 10, 5)]:
        layer = make_linear(rng.integers(-2**20, 2**20, (outputs, inputs)))
        reference = copy_of(layer)
        x = rng.integers(-128, 128, (batch, inputs)).astype(np.int8)
        delta = rng.integers(-2**14, 2**14, (batch, outputs)).astype(np.int32)
        for divisor, decay_inv in [(1, 0), (512, 3000), (3, 1)]:
            NUMPY.sgd_update(reference, delta, x, divisor, decay_inv)
            c_kernels.sgd_update(layer, delta, x, divisor, decay_inv)
            np.testing.assert_array_equal(layer.weight, reference.weight)
            assert layer.weight_bound == reference.weight_bound == np.abs(reference.weight).max()
            # the copy the next product reads
            np.testing.assert_array_equal(layer.kernel_cache.float64, reference.weight.astype(np.float64))
    assert spy.calls["sgd_update"] == 9


def test_sgd_update_hands_back_gradients_past_int32(c_kernels, spy):
    delta, x = np.ones((2, 3), np.int32), np.ones((2, 4), np.int8)
    # 128 * column_l1 bounds G: at most 2**31 - 1 here, so the C function runs
    layer = make_linear(np.ones((3, 4)))
    c_kernels.sgd_update(layer, delta, x, 1, 0, column_l1=INT32_MAX // 128)
    assert spy.calls["sgd_update"] == 1
    np.testing.assert_array_equal(layer.weight, np.full((3, 4), -1))  # 1 - 2 // 1
    np.testing.assert_array_equal(layer.kernel_cache.float64, np.full((3, 4), -1.0))
    assert layer.weight_bound == 1
    # past it, the reference does the update: same integers, no copy left
    for column_l1, divisor in [(2**24, 2), (None, 2**31)]:
        layer, reference = make_linear(np.ones((3, 4))), make_linear(np.ones((3, 4)))
        layer.kernel_cache = LayerCopies(float64=np.ones((3, 4)))
        NUMPY.sgd_update(reference, delta, x, divisor, 0, column_l1=column_l1)
        c_kernels.sgd_update(layer, delta, x, divisor, 0, column_l1=column_l1)
        np.testing.assert_array_equal(layer.weight, reference.weight)
        assert layer.weight_bound == reference.weight_bound and layer.kernel_cache is None
    assert spy.calls["sgd_update"] == 1
    # a bias: the reference updates it too
    layer, reference = make_linear(np.ones((3, 4)), bias=[5, 6, 7]), make_linear(np.ones((3, 4)), bias=[5, 6, 7])
    NUMPY.sgd_update(reference, delta, x, 1, 0)
    c_kernels.sgd_update(layer, delta, x, 1, 0)
    np.testing.assert_array_equal(layer.weight, reference.weight)
    np.testing.assert_array_equal(layer.bias, reference.bias)
    assert spy.calls["sgd_update"] == 1


# -- whole fits ------------------------------------------------------------------------------

def fitted_weights(estimator):
    return estimator.weights_ + estimator.head_weights_


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)


@pytest.fixture(params=COMPILED)
def implementation(request, spy):
    """Runs a test under each compiled implementation this machine runs; returns a function
    that checks, from the spy, that its own product kernels ran (and no other ISA's)."""
    name = request.param

    def assert_ran(forward=True):
        if name == "c":
            assert spy.calls["sgd_update"] > 0 and not any("/" in call for call in spy.calls)
            return
        assert spy.calls[f"units_sgd_update/{name}"] > 0
        if forward:
            assert spy.calls.get(f"pairs_scaled_product/{name}", 0) + spy.calls.get(f"units_product/{name}", 0) > 0
        other = "vnni" if name == "avx2" else "avx2"
        assert not any(call.endswith("/" + other) for call in spy.calls)

    assert_ran.name = name
    with sknitro.config_context(kernels=name):
        yield assert_ran


def test_fit_gives_identical_weights_on_every_implementation(spy, implementation, digits_small):
    X, y = digits_small
    params = dict(hidden_layer_sizes=(40, 20), max_iter=4, random_state=5)
    fast = NitroMLPClassifier(**params).fit(X, y)
    implementation()
    assert spy.calls["activation_backward"] > 0 and spy.calls["head_step"] > 0
    if implementation.name == "c":
        assert spy.calls["scale_to_int8"] > 0
    else:  # 64 -> 40 on the pair form, 40 -> 20 narrow: both scale in the product's lanes, no z
        assert "scale_to_int8" not in spy.calls
        assert spy.calls[f"pairs_scaled_product/{implementation.name}"] > 0
        assert spy.calls[f"narrow_scaled_product/{implementation.name}"] > 0
    with sknitro.config_context(kernels="numpy"):
        numpy_path = NitroMLPClassifier(**params).fit(X, y)
    with sknitro.config_context(gemm="integer"):
        integer_path = NitroMLPClassifier(**params).fit(X, y)
    assert_same_weights(fitted_weights(fast), fitted_weights(numpy_path))
    assert_same_weights(fitted_weights(fast), fitted_weights(integer_path))
    np.testing.assert_array_equal(fast.decision_function(X), integer_path.decision_function(X))


def test_cnn_runs_conv_and_dense_layers_on_the_kernels_with_identical_weights(spy, implementation, digits):
    # conv layers are dense layers on im2col patches: 9 columns for the first (narrower than
    # PAIR_MIN_WIDTH: split units, on the narrow kernels under a pair ISA), 81 (odd: split
    # units) for the second, then a dense block of 4 * 4 * 4 = 64 inputs (even: the pair form)
    X, y = digits
    X = X.reshape(-1, 1, 8, 8)[:300]
    params = dict(architecture=[9, "M", 4], hidden_layer_sizes=(16,), max_iter=2, random_state=1)
    fast = NitroCNNClassifier(**params).fit(X, y[:300])
    implementation()
    if implementation.name == "c":
        assert spy.calls["sgd_update"] > 0
    else:
        assert "sgd_update" not in spy.calls  # no layer left to the "c" kernels
        assert spy.calls[f"units_product/{implementation.name}"] > 0  # both conv layers
        assert spy.calls[f"pairs_scaled_product/{implementation.name}"] > 0  # the dense block
    with sknitro.config_context(kernels="numpy"):
        slow = NitroCNNClassifier(**params).fit(X, y[:300])
    assert_same_weights(fitted_weights(fast), fitted_weights(slow))
    np.testing.assert_array_equal(fast.decision_function(X), slow.decision_function(X))


def test_conv_blocks_alone_with_identical_weights(spy, implementation, digits):
    X, y = digits
    X = X.reshape(-1, 1, 8, 8)[:300]
    # 8 channels (the digit flipped, transposed, negated): 72 patch columns for the first conv
    # layer (the pair form; one channel, 9 columns, would go to the "c" kernels); the second
    # reads int16 dropout output (the "c" kernels: at a rate of 0.9, kept values ten times, past
    # int8)
    views = [X, X[..., ::-1], X[..., ::-1, :], X.transpose(0, 1, 3, 2)]
    X = np.concatenate(views + [16 - view for view in views], axis=1)
    params = dict(architecture=[6, "M", 8], hidden_layer_sizes=(), max_iter=2, conv_dropout=0.9,
                  random_state=3)
    fast = NitroCNNClassifier(**params).fit(X, y[:300])
    implementation()
    assert spy.calls["scale_to_int8"] > 0 and spy.calls["sgd_update"] > 0  # the second conv layer's
    with sknitro.config_context(gemm="integer"):
        exact = NitroCNNClassifier(**params).fit(X, y[:300])
    assert_same_weights(fitted_weights(fast), fitted_weights(exact))
    np.testing.assert_array_equal(fast.decision_function(X), exact.decision_function(X))


def test_weight_copies_live_for_one_epoch_and_are_never_saved(tmp_path, digits_small):
    X, y = digits_small
    clf = NitroMLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, y)
    layers = clf.network_.layers()
    assert all(layer.kernel_cache is None for layer in layers)
    # copies left over (as during an epoch) are neither pickled nor copied
    weight = layers[0].weight
    layers[0].kernel_cache = LayerCopies(
        float64=weight.astype(np.float64), units=weight.copy(),
        pairs=PairForm(weight.astype(np.int16), np.zeros(4, np.int32), np.zeros(4, np.int32), 0))
    joblib.dump(clf, tmp_path / "m.joblib")
    assert joblib.load(tmp_path / "m.joblib").network_.layers()[0].kernel_cache is None
    assert copy.deepcopy(clf).network_.layers()[0].kernel_cache is None
    assert layers[0].kernel_cache is not None  # the model's own copies are left alone


def test_weights_changed_between_epochs_are_used(implementation, digits_small):
    # no copy of the weights may outlive a change of the integer weights
    X, y = digits_small
    params = dict(hidden_layer_sizes=(16,), random_state=0)
    a = NitroMLPClassifier(**params).partial_fit(X, y, classes=np.unique(y))
    b = NitroMLPClassifier(**params).partial_fit(X, y, classes=np.unique(y))
    for clf in (a, b):
        weights = clf.network_.get_weights()
        weights[0] = tdiv(weights[0], 2).astype(np.int32)
        clf.network_.set_weights(weights)
    a.partial_fit(X, y)
    with sknitro.config_context(kernels="numpy"):
        b.partial_fit(X, y)
    assert_same_weights(fitted_weights(a), fitted_weights(b))


@pytest.mark.parametrize("name", [pytest.param("numpy", id="numpy")] + COMPILED)
def test_step_refuses_int32_overflow_and_leaves_the_weights_alone(spy, name):
    layer = make_linear(np.array([[2**31 - 10, 5]]))
    before = layer.weight.copy()
    delta, x = np.array([[-100]], np.int32), np.array([[1, 1]], np.int8)  # G = [[-100, -100]]
    with sknitro.config_context(kernels=name), pytest.raises(OverflowError):
        IntegerSGD(lr_inv=1).step(layer, delta, x, amp=1, decay_inv=0)
    np.testing.assert_array_equal(layer.weight, before)
    assert layer.weight_bound == 2**31 - 10
    assert not any("sgd_update" in call for call in spy.calls)


def channels_last(maps):
    """``maps`` (n, C, H, W) laid out (n, H, W, C) in memory, as the conv blocks keep them."""
    return np.ascontiguousarray(maps.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("window, padding, shape", [
    ((2, 2), (0, 0), (3, 5, 28, 28)), ((2, 2), (0, 0), (2, 3, 7, 7)), ((3, 2), (0, 0), (4, 33, 8, 5)),
    ((1, 1), (0, 0), (1, 2, 3, 3)), ((4, 4), (0, 0), (2, 17, 4, 6)), ((1, 16), (0, 0), (2, 3, 5, 16)),
    ((4, 2), (2, 0), (16, 64, 14, 14)), ((4, 4), (1, 1), (2, 3, 6, 6)), ((3, 3), (2, 1), (2, 5, 7, 8)),
    ((2, 5), (1, 4), (3, 2, 3, 2))])
def test_max_pool_matches_the_reference(c_kernels, spy, threads, window, padding, shape):
    # floor mode (7 -> 3, 5 -> 2: the last row and column in no window get no gradient), ties
    # (values from a few levels, -128 and 127 among them: the first maximum wins, a padding
    # position first in its window included), padding (a head's pool: 14 + 4 rows by 4), maps
    # narrower than a window but for their padding; 3 x 5 x 28 x 28 with 2 x 2 windows is
    # past one chunk (2**15 values), so 2 threads split it
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(shape[1])
    x = channels_last(rng.choice(np.array([-128, -5, 0, 3, 127], np.int8), shape))
    pooled = [(size + 2 * pad) // k for size, pad, k in zip(shape[2:], padding, window)]
    delta = rng.integers(-(2**31), 2**31, (shape[0], shape[1], *pooled), dtype=np.int64).astype(np.int32)
    pool = MaxPool2d(window, padding)
    expected, expected_argmax = pool.reference_forward(x)
    expected_grad = pool.reference_backward(delta, expected_argmax, shape)
    with threadpool_limits(threads):
        best, argmax = c_kernels.max_pool(pool, x)
        grad = c_kernels.max_pool_backward(pool, delta, argmax, shape)
    assert spy.calls["max_pool"] == spy.calls["max_unpool"] == 1
    assert best.dtype == np.int8 and argmax.dtype == np.uint8 and grad.dtype == np.int32
    np.testing.assert_array_equal(best, expected)
    np.testing.assert_array_equal(argmax, expected_argmax)
    np.testing.assert_array_equal(grad, expected_grad)
    assert grad.shape == shape
    if padding == (0, 0):  # (padding may win a window of -128 values: its delta is dropped)
        assert (grad != 0).sum() == (delta != 0).sum()


@needs_c
def test_max_pool_hands_back_what_it_does_not_cover(c_kernels, spy):
    # int16 maps (conv dropout's output), NCHW memory, int64 delta
    rng = np.random.default_rng(0)
    x = channels_last(rng.integers(-128, 128, (2, 3, 6, 6)).astype(np.int8))
    plain, padded = MaxPool2d((2, 2)), MaxPool2d((4, 4), (1, 1))
    cases = [(plain, x.astype(np.int16)), (padded, x.astype(np.int16)), (plain, np.ascontiguousarray(x))]
    for pool, maps in cases:
        best, argmax = c_kernels.max_pool(pool, maps)
        expected, expected_argmax = pool.reference_forward(maps)
        np.testing.assert_array_equal(best, expected)
        np.testing.assert_array_equal(argmax, expected_argmax)
        delta = rng.integers(-100, 100, best.shape).astype(np.int64)
        np.testing.assert_array_equal(c_kernels.max_pool_backward(pool, delta, argmax, maps.shape),
                                      pool.reference_backward(delta, argmax, maps.shape))
    assert "max_pool" not in spy.calls and "max_unpool" not in spy.calls


@needs_c
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, kernel, padding", [((64, 1, 28, 28), 3, 1), ((9, 32, 14, 14), 3, 1),
                                                    ((5, 3, 7, 9), 3, 1), ((2, 4, 5, 5), 3, 0),
                                                    ((2, 2, 3, 4), 5, 2), ((3, 6, 1, 1), 3, 1), ((2, 5, 4, 4), 1, 0)])
def test_im2col_matches_the_reference(c_kernels, spy, threads, shape, kernel, padding):
    # one channel (a first conv layer: rows of 3 values), many (whole window rows copied at
    # once), windows past every edge, no padding, 1 x 1 maps; the first two shapes are past
    # one chunk (2**15 values), so 2 threads split them
    from threadpoolctl import threadpool_limits

    from sknitro.nn.functional import im2col

    maps = channels_last(np.random.default_rng(shape[1]).integers(-128, 128, shape).astype(np.int8))
    with threadpool_limits(threads):
        patches = c_kernels.im2col(maps, kernel, padding)
    assert spy.calls["im2col"] == 1
    expected = im2col(maps, kernel, padding)
    assert patches.dtype == np.int8 and patches.flags.c_contiguous
    np.testing.assert_array_equal(patches, expected)


@needs_c
def test_im2col_hands_back_what_it_does_not_cover(c_kernels, spy):
    from sknitro.nn.functional import im2col

    maps = np.random.default_rng(1).integers(-128, 128, (2, 3, 5, 5)).astype(np.int8)
    for x in (maps, maps.astype(np.int16)):  # NCHW memory; int16 maps (conv dropout's output)
        np.testing.assert_array_equal(c_kernels.im2col(x, 3, 1), im2col(x, 3, 1))
    assert "im2col" not in spy.calls


def test_image_encoding_lookup_matches_the_reference(c_kernels, spy):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    encoder = InputEncoder().fit(images)
    with sknitro.config_context(kernels="c"):
        fast = encoder.transform(images)
    assert spy.calls["lookup_uint8"] > 0
    with sknitro.config_context(kernels="numpy"):
        slow = encoder.transform(images)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast, np.take(encoder.lookup_table[0], images))


def test_lookup_uint8_hands_back_other_inputs(c_kernels, spy):
    table = np.arange(-128, 128, dtype=np.int16)[::-1].astype(np.int8)
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(c_kernels.lookup_uint8(table, pixels), NUMPY.lookup_uint8(table, pixels))
    assert spy.calls["lookup_uint8"] == 1
    for other in (pixels[:, ::2], pixels.astype(np.int16)):  # strided; not uint8
        np.testing.assert_array_equal(c_kernels.lookup_uint8(table, other), NUMPY.lookup_uint8(table, other))
        np.testing.assert_array_equal(c_kernels.lookup_uint8(table, other), table[other])
    assert spy.calls["lookup_uint8"] == 1



@pytest.mark.skipif(_fused is None, reason="sknitro._fused is not built")
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 7, 8, 9, 1031])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox,
                                           np.random.SFC64])
def test_dropout_draws_are_numpys_draws(size, seed, bit_generator):
    # the masks of every keep threshold 0..100 pin each draw down; and the generator is left
    # where NumPy's draw leaves it (PCG64, the default, keeps half of a 64-bit draw for later)
    def generator():
        return np.random.Generator(bit_generator(seed))

    draws = generator().integers(0, 100, size=size, dtype=np.int8)
    for keep in range(101):
        rng, after_numpy = generator(), generator()
        mask = np.empty(size, np.bool_)
        _fused.dropout_mask(rng.bit_generator, mask, keep)
        np.testing.assert_array_equal(mask, draws < keep)
        after_numpy.integers(0, 100, size=size, dtype=np.int8)
        assert rng.integers(2**62) == after_numpy.integers(2**62)


@pytest.mark.parametrize("name", COMPILED)
def test_dropout_masks_of_every_implementation_are_the_references(name):
    implementation = kernels.IMPLEMENTATIONS[name]
    for shape, keep in [((64, 32, 14, 14), 90), ((7, 5), 75), ((0, 3), 50)]:
        ours, reference = np.random.default_rng(11), np.random.default_rng(11)
        mask = implementation.dropout_mask(ours, shape, keep)
        assert mask.dtype == np.bool_ and mask.shape == shape
        np.testing.assert_array_equal(mask, NUMPY.dropout_mask(reference, shape, keep))
        assert ours.integers(2**62) == reference.integers(2**62)


def test_dropout_masks_come_from_c_unless_numpy_draws_otherwise(c_kernels, spy, monkeypatch):
    assert kernels._draws_as_numpy()  # this NumPy draws as the C copy does (checked once)
    before = spy.calls.get("dropout_mask", 0)
    c_kernels.dropout_mask(np.random.default_rng(0), (4, 4), 90)
    assert spy.calls["dropout_mask"] == before + 1
    monkeypatch.setattr(kernels, "_draws_as_numpy", lambda: False)  # a NumPy whose method has changed
    ours, reference = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(c_kernels.dropout_mask(ours, (9, 9), 80), NUMPY.dropout_mask(reference, (9, 9), 80))
    assert spy.calls["dropout_mask"] == before + 1


def _dropout_inputs():
    """(name, x): channels-last maps (as max pooling leaves them), maps in C order, rows, a
    vector, and values at the int8 edges."""
    rng = np.random.default_rng(4)
    relu = rng.integers(-67, 92, size=(6, 5, 5, 8), dtype=np.int8)
    return [("channels-last maps", relu.transpose(0, 3, 1, 2)),
            ("maps", np.ascontiguousarray(relu.transpose(0, 3, 1, 2))),
            ("rows", rng.integers(-67, 92, size=(9, 40), dtype=np.int8)),
            ("vector", rng.integers(-67, 92, size=13, dtype=np.int8)),
            ("int8 edges", np.array([[-128, 127, 0, -1, 1, 95, -96]] * 3, dtype=np.int8))]


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("p", [0.05, 0.1, 0.25, 0.3, 0.5, 0.95])
def test_dropout_outputs_of_every_implementation_are_the_references(name, p, spy):
    # values, dtype (int8 exactly when every kept value fits) and shape; the compiled pass runs
    from sknitro.nn.layers import IntegerDropout

    dropout, implementation = IntegerDropout(p), kernels.IMPLEMENTATIONS[name]
    for label, x in _dropout_inputs():
        for x_range in (x, x // 2):  # the same inputs nearer 0: int8 at more rates
            mask = NUMPY.dropout_mask(np.random.default_rng(1), x_range.shape, dropout.keep_percent)
            expected = dropout.reference_forward(x_range, mask)
            got = implementation.dropout_forward(dropout, x_range, mask)
            assert got.dtype == expected.dtype and got.shape == expected.shape, (label, got.dtype, expected.dtype)
            np.testing.assert_array_equal(got, expected, err_msg=label)
    assert spy.calls["dropout_apply"] == 2 * len(_dropout_inputs())


def test_dropout_output_fits_int8_by_its_extreme_kept_values(c_kernels):
    # p = 0.25: R = 1333, and 95 * 1333 // 1000 = 126 fits int8, 96 -> 127 fits, 97 -> 129 does not
    from sknitro.nn.layers import IntegerDropout

    dropout = IntegerDropout(0.25)
    for top, dtype in [(95, np.int8), (96, np.int8), (97, np.int16)]:
        x = np.array([[-3, top, 5]], dtype=np.int8)
        mask = np.array([[True, False, True]])  # a masked value decides too, as in the reference
        got = c_kernels.dropout_forward(dropout, x, mask)
        assert got.dtype == dropout.reference_forward(x, mask).dtype == dtype
        np.testing.assert_array_equal(got, [[-3, 0, 6]])


def test_dropout_hands_back_what_its_pass_does_not_cover(c_kernels, spy):
    from sknitro.nn.layers import IntegerDropout

    dropout = IntegerDropout(0.1)
    x = np.random.default_rng(2).integers(-67, 92, size=(4, 3, 6, 6), dtype=np.int8)
    mask = NUMPY.dropout_mask(np.random.default_rng(3), x.shape, 90)
    for other_x, other_mask in [(x[:, :, ::2], mask[:, :, ::2]),  # strided maps
                                (x.astype(np.int16), mask),  # int16 maps (a dropout after a dropout)
                                (x, mask.astype(np.uint8)),  # a mask that is not bool
                                (x[:0], mask[:0])]:  # nothing
        np.testing.assert_array_equal(c_kernels.dropout_forward(dropout, other_x, other_mask),
                                      dropout.reference_forward(other_x, other_mask))
    assert "dropout_apply" not in spy.calls
