"""The VNNI products (sknitro/_vnni.c): each kernel against int64 NumPy arithmetic, on random
and extreme integers and awkward shapes, and the bounds that decide when they may run.

They run only on CPUs with AVX-512 VNNI; elsewhere the engine uses float64 BLAS, which
tests/test_fused.py covers, and these tests are skipped.
"""

import numpy as np
import pytest

from sknitro.nn import fused
from sknitro.nn.layers import IntegerLinear, nitro_scale
from sknitro.nn.optim import integer_sgd_step

pytestmark = pytest.mark.skipif(not fused.VNNI, reason="this CPU has no AVX-512 VNNI")

INT32_MAX = 2**31 - 1
UNITS_LIMIT = 2**23
SHAPES = [(64, 784, 200), (64, 200, 100), (5, 33, 7), (1, 1, 1), (3, 16, 4), (13, 17, 50)]


def input_units(x):
    units = np.empty(x.shape, dtype=np.int32)
    row_l1 = fused._kernels.input_units(x, x.shape[1], units)
    return units, row_l1


def split_units(a):
    units = np.empty_like(a)
    fused._kernels.split_units(a, units)
    return units


def product(x, w, chunk=0):
    z = np.empty((x.shape[0], w.shape[0]), dtype=np.int32)
    fused._kernels.units_product(input_units(x)[0], split_units(w), x.shape[0], w.shape[0], x.shape[1], chunk, z)
    return z


def pair_form(a, capacity=fused.OUTLIER_CAPACITY):
    pairs = np.empty(a.shape, dtype=np.int16)
    index, residual = np.empty(capacity, np.int32), np.empty(capacity, np.int32)
    count = fused._kernels.pair_form(a, a.shape[1], pairs, index, residual)
    return pairs, index, residual, count


def expected_pair_form(a):
    """The pair form by definition: int16 saturation, and what it cut off, by flat index."""
    saturated = np.clip(a, -(2**15), 2**15 - 1)
    index = np.flatnonzero(saturated != a)
    return saturated.astype(np.int16), index, (a - saturated).ravel()[index]


def pairs_product(x, w, chunk=0, capacity=fused.OUTLIER_CAPACITY):
    z = np.empty((x.shape[0], w.shape[0]), dtype=np.int32)
    pairs, index, residual, count = pair_form(w, capacity)
    fused._kernels.pairs_product(x.astype(np.int16), pairs, x, index, residual, count, x.shape[0], w.shape[0],
                                 x.shape[1], chunk, z)
    return z


def layer_with(weight):
    layer = IntegerLinear(weight.shape[1], weight.shape[0], 1, np.random.default_rng(0))
    layer.weight = weight
    layer.refresh_bounds()
    return layer


def test_units_recombine_to_the_integers():
    a = np.array([0, 1, -1, 255, 256, -256, -257, 2**15, -(2**15), UNITS_LIMIT - 1, -UNITS_LIMIT], dtype=np.int32)
    units = split_units(a)
    low, high = (units & 0xFFFF).astype(np.int16), (units >> 16).astype(np.int16)
    assert low.min() >= 0 and low.max() <= 255
    np.testing.assert_array_equal(high.astype(np.int64) * 256 + low, a)
    x = np.array([[-128, -127, -1, 0, 1, 127]], dtype=np.int8)
    xu, row_l1 = input_units(x)
    assert row_l1 == 128 + 127 + 1 + 0 + 1 + 127
    np.testing.assert_array_equal((xu & 0xFFFF).astype(np.int16), x[0:1])
    np.testing.assert_array_equal((xu >> 16).astype(np.int16), 256 * x.astype(np.int16))


@pytest.mark.parametrize("shape", SHAPES)
def test_product_is_exact(shape):
    m, k, n = shape
    rng = np.random.default_rng(k)
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-(2**16), 2**16, (n, k)).astype(np.int32)
    expected = x.astype(np.int64) @ w.T.astype(np.int64)
    assert np.abs(expected).max() <= INT32_MAX
    np.testing.assert_array_equal(product(x, w), expected)


def test_pair_form_saturates_and_lists_the_outliers():
    rng = np.random.default_rng(5)
    a = rng.integers(-(2**15), 2**15, (7, 30)).astype(np.int32)
    a[0, :6] = [2**15 - 1, 2**15, -(2**15), -(2**15) - 1, 2**31 - 1, -(2**31)]
    a[4, 29], a[6, 0] = 70000, -99999
    pairs, index, residual, count = pair_form(a)
    expected_pairs, expected_index, expected_residual = expected_pair_form(a)
    np.testing.assert_array_equal(pairs, expected_pairs)
    assert count == expected_index.size == 6
    np.testing.assert_array_equal(index[:count], expected_index)
    np.testing.assert_array_equal(residual[:count], expected_residual)
    assert pair_form(a, capacity=2)[3] == 6  # counted past the capacity


@pytest.mark.parametrize("shape", [(64, 784, 200), (64, 200, 100), (5, 34, 7), (1, 2, 1), (13, 18, 50)])
def test_pairs_product_is_exact_with_outliers(shape):
    m, k, n = shape
    rng = np.random.default_rng(k)
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    outliers = rng.choice(n * k, size=min(40, n * k), replace=False)
    w.ravel()[outliers] = rng.integers(2**15, 2**22, outliers.size) * rng.choice([-1, 1], outliers.size)
    w.ravel()[outliers[:2]] = [2**15, -(2**15) - 1]  # the first values past int16
    expected = x.astype(np.int64) @ w.T.astype(np.int64)
    np.testing.assert_array_equal(pairs_product(x, w), np.clip(expected, -(2**31), INT32_MAX))
    # chunks of 16 pairs: 2 * 128 * 2**15 * 16 = 2**28 per lane
    np.testing.assert_array_equal(pairs_product(x, w, chunk=16), np.clip(expected, -(2**31), INT32_MAX))


def test_pairs_product_needs_an_even_width_and_a_complete_list():
    x = np.ones((2, 3), dtype=np.int8)
    with pytest.raises(ValueError, match="even"):
        fused._kernels.pairs_product(x.astype(np.int16), np.ones((2, 3), np.int16), x, np.zeros(4, np.int32),
                                     np.zeros(4, np.int32), 0, 2, 2, 3, 0, np.empty((2, 2), np.int32))
    x = np.ones((2, 4), dtype=np.int8)
    with pytest.raises(ValueError, match="count"):
        fused._kernels.pairs_product(x.astype(np.int16), np.ones((2, 4), np.int16), x, np.zeros(4, np.int32),
                                     np.zeros(4, np.int32), 5, 2, 2, 4, 0, np.empty((2, 2), np.int32))


def test_product_chunks_add_up_in_int64_and_saturate():
    # chunks of 16 inputs: 128 * (2**20 - 1) * 16 < 2**31, the most an int32 lane may hold
    m, k, n = 5, 784, 6
    x = np.full((m, k), -128, dtype=np.int8)
    x[1] = 127
    x[2, ::2], x[2, 1::2] = 127, -127  # a row whose sum cancels
    x[3] = 1  # a row whose sum fits int32
    w = np.full((n, k), 2**20 - 1, dtype=np.int32)
    w[3] = -(2**20 - 1)
    expected = x.astype(np.int64) @ w.T.astype(np.int64)
    assert np.abs(expected).max() > INT32_MAX
    np.testing.assert_array_equal(product(x, w, chunk=16), np.clip(expected, -(2**31), INT32_MAX))
    moderate = np.full((n, k), 2**14, dtype=np.int32)
    np.testing.assert_array_equal(product(x, moderate, chunk=512), x.astype(np.int64) @ moderate.T.astype(np.int64))


@pytest.mark.parametrize("inputs", [784, 783])  # even: the pair product; odd: split units
def test_scaled_product_through_a_layer_matches_nitro_scale(inputs):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (64, inputs)).astype(np.int8)
    for bound in (100, 2**15, 2**19, 2**20 - 1):  # the last ones need chunks (2**20: 16 inputs)
        weight = rng.integers(-bound, bound + 1, (10, inputs)).astype(np.int32)
        layer = layer_with(weight)
        scale = 2**8 * inputs
        expected = nitro_scale(x.astype(np.int64) @ weight.T.astype(np.int64), scale)
        np.testing.assert_array_equal(fused.units_scaled_product(layer, x, scale), expected)
        assert layer.input_units[0] is x
        if inputs % 2:
            assert layer.weight_units is not None and layer.weight_pairs is None
        else:  # the pair form, unless it has too many outliers
            outliers = layer.weight_pairs[3]
            assert (outliers > 0) == (bound > 2**15)
            assert (layer.weight_units is None) == (outliers <= fused.OUTLIER_CAPACITY)


def test_too_many_outliers_switch_the_forward_to_split_units():
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (8, 64)).astype(np.int8)
    weight = np.full((fused.OUTLIER_CAPACITY // 64 + 1, 64), 2**16, dtype=np.int32)  # all past int16
    layer = layer_with(weight)
    expected = nitro_scale(x.astype(np.int64) @ weight.T.astype(np.int64), 2**8 * 64)
    np.testing.assert_array_equal(fused.units_scaled_product(layer, x, 2**8 * 64), expected)
    assert layer.weight_pairs[3] > fused.OUTLIER_CAPACITY and layer.weight_units is not None


def test_scaled_product_declines_outside_its_bounds():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (4, 8)).astype(np.int8)
    layer = layer_with(np.full((3, 8), UNITS_LIMIT, dtype=np.int32))
    assert fused.units_scaled_product(layer, x, 256) is not None  # the pair form has no limit
    layer = layer_with(np.full((3 * fused.OUTLIER_CAPACITY, 8), UNITS_LIMIT, dtype=np.int32))
    assert fused.units_scaled_product(layer, x, 256) is None  # too many outliers; past the split units
    layer = layer_with(np.ones((3, 8), dtype=np.int32))
    assert fused.units_scaled_product(layer, x.astype(np.int16), 256) is None  # not int8
    assert fused.units_scaled_product(layer, x, 2**24) is None  # 128 * scale past int32
    assert fused.units_scaled_product(layer, x, 256) is not None


def run_update(delta, x, weight, divisor, decay_inv, mirror):
    """The update kernel on a copy of ``weight``: (new weight, max|w|, its mirror, outliers)."""
    updated = weight.copy()
    (batch, n), k = delta.shape, x.shape[1]
    if mirror == "split":
        copy = np.empty_like(weight)
        bound, count = fused._kernels.units_sgd_update(delta, input_units(x)[0], updated, copy, batch, n, k,
                                                       divisor, decay_inv)
        return updated, bound, copy, count
    copy = np.empty(weight.shape, np.int16)
    index, residual = np.empty(weight.size, np.int32), np.empty(weight.size, np.int32)  # room for all
    bound, count = fused._kernels.units_sgd_update(delta, input_units(x)[0], updated, copy, batch, n, k, divisor,
                                                   decay_inv, index, residual)
    return updated, bound, copy, (count, index[:count], residual[:count])


@pytest.mark.parametrize("mirror", ["split", "pairs"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("decay_inv", [0, 1, 7, 3000])
def test_update_matches_integer_sgd(shape, decay_inv, mirror):
    batch, k, n = shape
    rng = np.random.default_rng(batch * k + decay_inv)
    x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
    delta = rng.integers(-(2**17), 2**17, (batch, n)).astype(np.int32)
    weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    weight.ravel()[rng.choice(n * k, size=min(30, n * k), replace=False)] = 2**20  # outliers of the pair form
    grad = delta.T.astype(np.int64) @ x.astype(np.int64)
    assert np.abs(grad).max() <= INT32_MAX
    expected = weight.copy()
    expected_bound = integer_sgd_step(expected, grad, int(np.abs(grad).max()), 2**20, 512 * 3, decay_inv)
    updated, bound, copy, outliers = run_update(delta, x, weight, 512 * 3, decay_inv, mirror)
    np.testing.assert_array_equal(updated, expected)
    assert bound == expected_bound
    if mirror == "split":
        np.testing.assert_array_equal(copy, split_units(expected))
        assert outliers == 0
    else:
        pairs, index, residual = expected_pair_form(expected)
        np.testing.assert_array_equal(copy, pairs)
        assert outliers[0] == index.size
        np.testing.assert_array_equal(outliers[1], index)
        np.testing.assert_array_equal(outliers[2], residual)


def test_update_divides_toward_zero_at_every_remainder():
    # G = delta[0, j] * x[0, k] takes every value around the multiples of the divisor
    divisor = 1000
    delta = np.arange(-3000, 3001, dtype=np.int32)[None, :]
    x = np.ones((1, 16), dtype=np.int8)
    weight = np.zeros((delta.shape[1], 16), dtype=np.int32)
    updated = run_update(delta, x, weight, divisor, 0, "split")[0]
    expected = -(np.sign(delta[0]) * (np.abs(delta[0]) // divisor))
    np.testing.assert_array_equal(updated[:, 0], expected)


@pytest.mark.parametrize("inputs", [20, 19])
def test_layer_update_keeps_the_copies_consistent(inputs):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (8, inputs)).astype(np.int8)
    layer = layer_with(rng.integers(-1000, 1000, (6, inputs)).astype(np.int32))
    layer.weight64 = layer.weight.astype(np.float64)
    fused.units_scaled_product(layer, x, 2**8 * inputs)
    assert layer.input_units is not None
    delta = rng.integers(-500, 500, (8, 6)).astype(np.int32)
    delta[0, 0] = 3000  # a row of weights leaves int16
    expected = layer.weight.copy()
    grad = delta.T.astype(np.int64) @ x.astype(np.int64)
    integer_sgd_step(expected, grad, int(np.abs(grad).max()), layer.weight_bound, 4, 0)
    assert fused.units_sgd_update(layer, delta, x, layer.weight_grad_bound(delta, x), 4, 0)
    np.testing.assert_array_equal(layer.weight, expected)
    assert layer.weight_bound == np.abs(expected).max() > 2**15
    if inputs % 2:
        np.testing.assert_array_equal(layer.weight_units, split_units(expected))
        assert layer.weight_pairs is None
    else:
        pairs, index, residual = expected_pair_form(expected)
        np.testing.assert_array_equal(layer.weight_pairs[0], pairs)
        assert layer.weight_pairs[3] == index.size > 0 and layer.weight_units is None
    assert layer.weight64 is None and layer.input_units is None  # stale copy dropped; input used up
    # the next forward reads the copy the update wrote
    scale = 2**8 * inputs
    np.testing.assert_array_equal(fused.units_scaled_product(layer, x, scale),
                                  nitro_scale(x.astype(np.int64) @ expected.T.astype(np.int64), scale))


def test_update_declines_outside_its_bounds():
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (8, 20)).astype(np.int8)
    layer = layer_with(np.zeros((6, 20), dtype=np.int32))
    delta = np.full((8, 6), UNITS_LIMIT, dtype=np.int32)  # past the split units
    assert not fused.units_sgd_update(layer, delta, x, 128 * UNITS_LIMIT, 64, 0)
    assert not fused.units_sgd_update(layer, delta[:, :3] // 2**20, x, 2**31, 64, 0)  # G could pass int32
    assert not fused.units_sgd_update(layer, delta.astype(np.int64) // 2**20, x, 2**10, 64, 0)  # not int32
    np.testing.assert_array_equal(layer.weight, 0)


def test_update_drops_the_split_units_past_their_range():
    x = np.ones((1, 15), dtype=np.int8)  # odd width: split units
    layer = layer_with(np.full((1, 15), UNITS_LIMIT - 2, dtype=np.int32))
    delta = np.full((1, 1), -10, dtype=np.int32)
    assert fused.units_sgd_update(layer, delta, x, 10 * 128, 1, 0)
    assert layer.weight_bound == UNITS_LIMIT + 8 and layer.weight_units is None
    assert fused.units_scaled_product(layer, x, 256) is None  # the float64 path takes over


def test_kernels_check_their_arguments():
    x = np.zeros((2, 3), dtype=np.int32)
    with pytest.raises(ValueError, match="z"):
        fused._kernels.units_product(x, x, 2, 2, 3, 0, np.empty((2, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="divisor"):
        fused._kernels.units_sgd_update(np.zeros((2, 2), np.int32), x, x[:2, :3].copy(), np.empty((2, 3), np.int32),
                                        2, 2, 3, 0, 0)
    with pytest.raises(ValueError, match="empty"):
        fused._kernels.units_product(x, x, 0, 2, 3, 0, np.empty((0, 2), dtype=np.int32))
