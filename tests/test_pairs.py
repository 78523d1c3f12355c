"""The pair products (sknitro/_pairs.h): the AVX2 (_avx2.c) and AVX-512 VNNI (_vnni.c)
kernels against int64 NumPy arithmetic, and PairKernels, which runs them for the dense and
conv layers (inputs narrower than PAIR_MIN_WIDTH, 64 columns, on the narrow kernels: outputs
in the lanes), against the NumPy reference.

The tests of the kernels run on each instruction set this CPU has (an ISA it lacks is
skipped; the float64 path that runs there instead is tests/test_fused.py's). The kernels are vector
code in tiles -- AVX2: 8 lanes, 2 rows of x by 4 rows of w, update tiles of 16 columns;
VNNI: 16 lanes, 4 by 4, 64 columns; both: blocks of 8 rows of x -- so the shapes here
leave partial vectors (1, 7, 9, 15, 17, 33 units), partial tiles and partial blocks, and
the integers go as far as the callers' proofs allow: sums exact only in chunks, z
saturating to int32, weights past int16 (the pair form's outliers: several per row, and
more than its list holds), |delta| up to the split units' 2**23. The OpenMP thread count
must not change any result either. Each output is written at the start of a longer buffer
filled with a sentinel: a slot the kernel misses keeps it, and a write past the end shows.
The kernels read the int8 input x itself (they make its forms in registers): x next to an
unreadable page shows a read past either end of it.
"""

import ctypes
import dataclasses
import mmap
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from sknitro.nn import kernels
from sknitro.nn.kernels import (OUTLIER_CAPACITY, PAIR_LIMIT, PAIR_MIN_WIDTH, UNITS_LIMIT, LayerCopies,
                                integer_sgd_step, nitro_scale)
from sknitro.nn.layers import IntegerLinear, make_activation

pytestmark = pytest.mark.skipif(kernels._compiled is None, reason="sknitro._fused is not built")

_fused = kernels._compiled  # the module itself: the spy fixture replaces kernels._compiled
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
ISA_NAMES = {"avx2": "AVX2", "vnni": "AVX-512 VNNI"}


def isa_param(isa, *marks):
    return pytest.param(isa, id=isa, marks=[pytest.mark.skipif(isa not in kernels.AVAILABLE,
                                                               reason=f"this CPU has no {ISA_NAMES[isa]}"), *marks])


@pytest.fixture(params=[isa_param("avx2"), isa_param("vnni")])
def isa(request):
    return request.param


# -- helpers: the kernels called directly, and their results by definition ------------------

GUARD = 40
FILL = {np.dtype(np.int32): 0x5A5A5A5A, np.dtype(np.int16): 0x5A5A, np.dtype(np.int8): 0x5A}


def guarded(shape, dtype, values=None):
    """``(array, tail)``: an array (filled with a sentinel, or ``values``) at the start of a
    longer buffer whose ``tail`` a kernel must leave alone."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buffer = np.full(size + GUARD, FILL[dtype], dtype)
    array = buffer[:size].reshape(shape)
    if values is not None:
        array[...] = values
    return array, buffer[size:]


def assert_untouched(*tails):
    for tail in tails:
        assert (tail == FILL[tail.dtype]).all(), "a kernel wrote past the end of its output"


def exact(x, w):
    return x.astype(np.int64) @ w.T.astype(np.int64)


def saturated(z):
    return np.clip(z, INT32_MIN, INT32_MAX)


def split_units(a):
    units = np.empty_like(a)
    _fused.split_units(a, units)
    return units


def units_product(isa, x, w, chunk=0):
    z, tail = guarded((x.shape[0], w.shape[0]), np.int32)
    _fused.units_product(isa, x, split_units(w), chunk, z)
    assert_untouched(tail)
    return z


def pair_form(a, capacity=OUTLIER_CAPACITY):
    pairs = np.empty(a.shape, dtype=np.int16)
    index, residual = np.empty(capacity, np.int32), np.empty(capacity, np.int32)
    count = _fused.pair_form(a, pairs, index, residual)
    return pairs, index, residual, count


def expected_pair_form(a):
    """The pair form by definition: int16 saturation, and what it cut off, by flat index."""
    clipped = np.clip(a, -(2**15), 2**15 - 1)
    index = np.flatnonzero(clipped != a)
    return clipped.astype(np.int16), index, (a.astype(np.int64) - clipped).ravel()[index]


def pairs_product(isa, x, w, chunk=0):
    """The pair product, with a list that holds every outlier of ``w`` (the kernel takes any
    number; the layers cap it at OUTLIER_CAPACITY)."""
    pairs, index, residual, count = pair_form(w, capacity=w.size)
    z, tail = guarded((x.shape[0], w.shape[0]), np.int32)
    _fused.pairs_product(isa, x, pairs, index, residual, count, chunk, z)
    assert_untouched(tail)
    return z


def layer_with(weight):
    return IntegerLinear.from_weight(np.array(weight, dtype=np.int32))


# partial AVX2 (8) and VNNI (16) vectors of units, and whole ones
UNIT_WIDTHS = [1, 7, 8, 9, 15, 16, 17, 33]
# (m, n): partial tiles of x rows (2, 4) and w rows (4), and a partial second block of 8 rows
ROWS = [(1, 1), (2, 4), (3, 5), (5, 7), (9, 3), (13, 6)]


def test_units_recombine_to_the_integers():
    a = np.array([[0, 1, -1, 255, 256, -256, -257, 2**15, -(2**15), UNITS_LIMIT - 1, -UNITS_LIMIT]], dtype=np.int32)
    units = split_units(a)  # (a matrix, like the weights)
    low, high = (units & 0xFFFF).astype(np.int16), (units >> 16).astype(np.int16)
    assert low.min() >= 0 and low.max() <= 255
    np.testing.assert_array_equal(high.astype(np.int64) * 256 + low, a)


def expected_row_l1(x):
    return int(np.abs(x.astype(np.int64)).sum(axis=1).max())


def test_row_l1_is_the_largest_row_l1_norm():
    # the kernels make x's forms themselves; the forward's proof needs max_i sum_k |x[i, k]|
    x = np.array([[-128, -127, -1, 0, 1, 127]], dtype=np.int8)
    assert _fused.row_l1(x) == 128 + 127 + 1 + 0 + 1 + 127
    # rows all -128 / all 127 (|-128| must not wrap), the largest row first, last or inside
    for cols in (1, 7, 16, 33, 784):
        rng = np.random.default_rng(cols)
        for extreme in (-128, 127):
            for at in (0, 3, 6):
                x = rng.integers(-127, 128, (7, cols)).astype(np.int8) // 2
                x[at] = extreme
                assert _fused.row_l1(x) == expected_row_l1(x) == abs(extreme) * cols
        x = rng.integers(-128, 128, (13, cols)).astype(np.int8)
        assert _fused.row_l1(x) == expected_row_l1(x)
        assert _fused.row_l1(np.zeros((3, cols), np.int8)) == 0
    # the same bytes seen as rows of other widths: the norm follows the shape
    x = np.full((4, 6), -128, dtype=np.int8)
    x[1::2] = 1
    for cols in (1, 2, 3, 6, 8, 12, 24):
        rows = x.reshape(-1, cols)
        assert _fused.row_l1(rows) == expected_row_l1(rows)
    # a row L1 norm past int32: int64 throughout
    x = np.full((2, 2**24 + 1), -128, dtype=np.int8)
    assert _fused.row_l1(x) == 128 * (2**24 + 1) > INT32_MAX
    # no rows at all: no norm past 0 (PairKernels never asks: it takes no empty input)
    assert _fused.row_l1(np.ones((0, 3), np.int8)) == 0


@pytest.mark.parametrize("shape", [(6,), (0,), (24,), (2, 3, 1), (1, 2, 3), (4, 6, 1, 1)])
def test_row_l1_refuses_arrays_that_are_not_matrices(shape):
    # the rows are x's own: a flat buffer or a stack of matrices is refused, not reinterpreted
    with pytest.raises(ValueError, match="dimensions"):
        _fused.row_l1(np.ones(shape, np.int8))


def test_row_l1_takes_c_contiguous_int8_only():
    for dtype in (np.uint8, np.int16, np.int32, np.float64, np.bool_):
        with pytest.raises(ValueError, match="dtype mismatch"):
            _fused.row_l1(np.ones((2, 3), dtype))
    with pytest.raises(ValueError, match="contiguous"):
        _fused.row_l1(np.ones((2, 6), np.int8)[:, ::2])  # strided
    for not_an_array in (None, [[1, 2, 3]], 3):
        with pytest.raises((TypeError, ValueError)):
            _fused.row_l1(not_an_array)


# -- the products ----------------------------------------------------------------------------

@pytest.mark.parametrize("units", UNIT_WIDTHS)
def test_units_product_is_exact(isa, units):
    rng = np.random.default_rng(units)
    for m, n in ROWS:
        x = rng.integers(-128, 128, (m, units)).astype(np.int8)
        x[0] = -128  # the extreme input
        w = rng.integers(-(2**16), 2**16, (n, units)).astype(np.int32)
        w[-1, -1] = -(2**16)
        expected = exact(x, w)
        assert np.abs(expected).max() <= INT32_MAX  # one sum per row is exact
        np.testing.assert_array_equal(units_product(isa, x, w), expected, err_msg=f"m={m} n={n}")


@pytest.mark.parametrize("units", UNIT_WIDTHS)
def test_units_product_at_the_extremes_of_the_units(isa, units):
    # |x * w| <= 128 * 2**23 = 2**30: a chunk of one unit is the most a lane may hold; the
    # high half of -2**23 is -32768, that of (x, 256 x) for x = -128 too
    rng = np.random.default_rng(100 + units)
    for m, n in ROWS:
        x = rng.choice(np.array([-128, 127, -1, 0], np.int8), (m, units))
        w = rng.choice(np.array([-UNITS_LIMIT, UNITS_LIMIT - 1, 255, 256, -256, -1], np.int32), (n, units))
        x[0], w[0] = -128, -UNITS_LIMIT
        np.testing.assert_array_equal(units_product(isa, x, w, chunk=1), saturated(exact(x, w)))


@pytest.mark.parametrize("units", UNIT_WIDTHS)
def test_pairs_product_is_exact_with_outliers(isa, units):
    rng = np.random.default_rng(200 + units)
    width = 2 * units
    for m, n in ROWS:
        x = rng.integers(-128, 128, (m, width)).astype(np.int8)
        x[-1] = -128
        w = rng.integers(-(2**15), 2**15, (n, width)).astype(np.int32)
        # outliers scattered over the rows (several per row, in edge tiles too), the first
        # values past int16, the int32 extremes, and one in the last row and column
        where = rng.choice(w.size, size=max(1, w.size // 4), replace=False)
        w.flat[where] = rng.integers(2**15, 2**22, where.size) * rng.choice([-1, 1], where.size)
        w[0, :4] = [2**15, -(2**15) - 1, INT32_MAX, INT32_MIN][:width]
        w[-1, -1] = -(2**20)
        expected = saturated(exact(x, w))  # the outliers can take z past int32
        np.testing.assert_array_equal(pairs_product(isa, x, w), expected, err_msg=f"m={m} n={n}")
        # chunks of 16 pairs: 2 * 128 * 2**15 * 16 = 2**28 per lane
        np.testing.assert_array_equal(pairs_product(isa, x, w, chunk=16), expected, err_msg=f"m={m} n={n}")


def test_pairs_product_with_a_whole_row_of_outliers_and_none_elsewhere(isa):
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (5, 34)).astype(np.int8)
    w = rng.integers(-1000, 1000, (6, 34)).astype(np.int32)
    w[4] = rng.integers(2**15, 2**18, 34)  # row 4: the second tile of w rows, all outliers
    np.testing.assert_array_equal(pairs_product(isa, x, w), exact(x, w))
    np.testing.assert_array_equal(pairs_product(isa, x, np.clip(w, -1000, 1000)), exact(x, np.clip(w, -1000, 1000)))


@pytest.mark.parametrize("units", [9, 33, 784, 785])
@pytest.mark.parametrize("chunk", [1, 5, 8, 16, 17])
def test_units_product_chunks_add_up_in_int64_and_saturate(isa, units, chunk):
    # each chunk of `chunk` units holds at most 128 * bound * chunk < 2**31; a chunk that is
    # not a whole number of vectors ends inside one
    bound = min(UNITS_LIMIT - 1, INT32_MAX // (128 * chunk))
    rng = np.random.default_rng(units * chunk)
    x = np.full((7, units), -128, dtype=np.int8)
    x[1] = 127
    x[2, ::2], x[2, 1::2] = 127, -127  # a row whose sum cancels
    x[3] = 1  # a row whose sum fits int32
    x[4:] = rng.integers(-128, 128, (3, units))
    w = np.full((6, units), bound, dtype=np.int32)
    w[3] = -bound
    w[4:] = rng.integers(-bound, bound + 1, (2, units))
    expected = exact(x, w)
    if units >= 784:  # whole rows leave int32: only the chunks are exact
        assert np.abs(expected).max() > INT32_MAX
    np.testing.assert_array_equal(units_product(isa, x, w, chunk=chunk), saturated(expected))


@pytest.mark.parametrize("units", [9, 33, 784, 785])
@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 127])
def test_pairs_product_chunks_add_up_in_int64_and_saturate(isa, units, chunk):
    # a pair adds at most 2 * 128 * 2**15 = 2**24: chunks of up to 127 pairs fit int32
    rng = np.random.default_rng(units + chunk)
    width = 2 * units
    x = np.full((7, width), -128, dtype=np.int8)
    x[1] = 127
    x[2, ::2], x[2, 1::2] = 127, -127
    x[3] = 1
    x[4:] = rng.integers(-128, 128, (3, width))
    w = np.full((6, width), -(2**15), dtype=np.int32)
    w[3] = 2**15 - 1
    w[4:] = rng.integers(-(2**15), 2**15, (2, width))
    w[5, ::3] = 2**21  # outliers, added in int64 too
    expected = exact(x, w)
    if units >= 784:
        assert np.abs(expected).max() > INT32_MAX
    np.testing.assert_array_equal(pairs_product(isa, x, w, chunk=chunk), saturated(expected))


def test_outliers_are_added_before_z_saturates(isa):
    # the pair form's part of a row may leave int32 while the whole row fits (its outliers
    # pull it back), and the other way round: z saturates only after both are added
    width = 2 * 785
    x = np.full((3, width), 127, dtype=np.int8)
    x[1] = -128
    x[2, ::2] = -3
    w = np.full((5, width), 2**15 - 1, dtype=np.int32)
    w[0, 0] = -(2**15 - 1) * (width - 1) + 5  # row 0 of x: z = 127 * 5
    w[1] = 0
    w[1, 1::200] = 2**30  # past int32 through the outliers alone
    w[2] = -w[1]
    w[3, -1] = INT32_MIN
    w[4, :] = -(2**15)
    w[4, 7] = (2**15) * (width - 1) - 1
    expected = exact(x, w)
    assert expected[0, 0] == 127 * 5 and np.abs(expected).max() > INT32_MAX
    np.testing.assert_array_equal(pairs_product(isa, x, w, chunk=64), saturated(expected))


@pytest.mark.parametrize("units", [9, 33, 392, 785])
def test_pairs_scaled_product_is_the_product_scaled(isa, threads, units):
    # the tiles' exact sums (chunks and outliers in int64, past int32 too) go through NITRO
    # scaling and the activation table without z in memory: the int8 of the exact product
    # scaled; rows and outputs past whole tiles, scales that leave remainders either way and
    # that saturate, sums past +-128 * scale and past int32; 2 threads split the rows
    rng = np.random.default_rng(units)
    width = 2 * units
    x = rng.integers(-128, 128, (203, width)).astype(np.int8)
    x[0], x[1] = -128, 127
    w = rng.integers(-(2**15), 2**15, (11, width)).astype(np.int32)
    w[0], w[1] = -(2**15), 2**15 - 1
    w[2, ::5] = 2**21  # outliers
    pairs, index, residual, count = pair_form(w, capacity=w.size)
    exact_z = exact(x, w)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    for scale in (1, 3, 2**8 * width, 2**23 + 1):
        expected = nitro_scale(exact_z, scale)
        # whole rows in one int32 sum where the extremes allow it (9 and 33 pairs), else chunks
        for chunk in ((0, 7) if units < 64 else (7, 64)):
            (scaled, scaled_tail), (activated, activated_tail) = (guarded((203, 11), np.int8) for _ in range(2))
            threads(2, lambda: _fused.pairs_scaled_product(isa, x, pairs, index, residual, count, chunk, scale,
                                                           scaled, table, activated))
            assert_untouched(scaled_tail, activated_tail)
            np.testing.assert_array_equal(scaled, expected, err_msg=f"scale={scale} chunk={chunk}")
            np.testing.assert_array_equal(activated, table[expected.view(np.uint8)])
            alone = np.empty_like(scaled)
            threads(1, lambda: _fused.pairs_scaled_product(isa, x, pairs, index, residual, count, chunk, scale,
                                                           alone))
            np.testing.assert_array_equal(alone, expected)
    if units >= 392:
        assert np.abs(exact_z).max() > INT32_MAX  # saturated z would scale the same: the clamp
    assert (nitro_scale(exact_z, 1) == 127).any() and (nitro_scale(exact_z, 1) == -127).any()


def fenced(values, side):
    """``values`` (C-contiguous) in memory that ends (side "after") or starts ("before") at a
    page next to an unreadable one: a kernel that reads past that end of x faults (and the
    test's process dies) instead of reading what happens to lie there."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    pages = -(-values.nbytes // page)
    buffer = mmap.mmap(-1, (pages + 1) * page)  # the mapping lives as long as the array
    anchor = ctypes.c_char.from_buffer(buffer)
    start = ctypes.addressof(anchor)
    del anchor
    fence, offset = (pages * page, pages * page - values.nbytes) if side == "after" else (0, page)
    if libc.mprotect(start + fence, page, 0) != 0:  # PROT_NONE
        pytest.skip(f"mprotect failed: errno {ctypes.get_errno()}")
    x = np.frombuffer(buffer, values.dtype, values.size, offset).reshape(values.shape)
    x[...] = values
    return x


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages through mprotect")
@pytest.mark.parametrize("units", UNIT_WIDTHS + [64, 65])
def test_the_kernels_read_x_within_its_bounds(isa, units):
    # the kernels read int8 x itself, in vectors of 8 or 16 units (16 or 32 values for pairs)
    # and masked or copied tails: none may touch a byte before or after it
    rng = np.random.default_rng(300 + units)
    for m, n in ROWS:
        for width in (units, 2 * units):
            values = rng.integers(-128, 128, (m, width)).astype(np.int8)
            values[-1, -1] = -128
            w = rng.integers(-(2**15), 2**15, (n, width)).astype(np.int32)
            w[-1, -1] = 2**20  # an outlier of the pair form: its correction reads x too
            w[0, 0] = -(2**19)
            delta = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
            expected = exact(values, w)
            assert np.abs(expected).max() <= INT32_MAX
            updated, bound = expected_update(delta, values, w, 64, 3000)
            for side in ("after", "before"):
                x = fenced(values, side)
                err_msg = f"m={m} n={n} width={width} fence {side}"
                np.testing.assert_array_equal(units_product(isa, x, w), expected, err_msg=err_msg)
                np.testing.assert_array_equal(units_product(isa, x, w, chunk=16), expected, err_msg=err_msg)
                if width % 2 == 0:
                    np.testing.assert_array_equal(pairs_product(isa, x, w), expected, err_msg=err_msg)
                    np.testing.assert_array_equal(pairs_product(isa, x, w, chunk=16), expected, err_msg=err_msg)
                for mirror in ("split", "pairs"):
                    got, got_bound, copy, outliers = run_update(isa, delta, x, w, 64, 3000, mirror)
                    np.testing.assert_array_equal(got, updated, err_msg=err_msg)
                    assert got_bound == bound
                    assert_mirror(copy, outliers, updated, mirror)


def test_pair_form_saturates_and_lists_the_outliers():
    rng = np.random.default_rng(5)
    a = rng.integers(-(2**15), 2**15, (7, 30)).astype(np.int32)
    a[0, :6] = [2**15 - 1, 2**15, -(2**15), -(2**15) - 1, INT32_MAX, INT32_MIN]
    a[4, 29], a[6, 0] = 70000, -99999
    a[5, 3:12:2] = 2**16  # several in one row
    pairs, index, residual, count = pair_form(a)
    expected_pairs, expected_index, expected_residual = expected_pair_form(a)
    np.testing.assert_array_equal(pairs, expected_pairs)
    assert count == expected_index.size == 11
    np.testing.assert_array_equal(index[:count], expected_index)
    np.testing.assert_array_equal(residual[:count], expected_residual)
    # past its capacity the list is counted whole and holds the first ones
    pairs, index, residual, count = pair_form(a, capacity=4)
    assert count == 11
    np.testing.assert_array_equal(index, expected_index[:4])
    np.testing.assert_array_equal(residual, expected_residual[:4])
    np.testing.assert_array_equal(pairs, expected_pairs)
    assert pair_form(a, capacity=0)[3] == 11


def test_pairs_product_needs_an_even_width_and_a_complete_list(isa):
    x = np.ones((2, 3), dtype=np.int8)
    with pytest.raises(ValueError, match="even"):
        _fused.pairs_product(isa, x, np.ones((2, 3), np.int16), np.zeros(4, np.int32), np.zeros(4, np.int32), 0,
                             0, np.empty((2, 2), np.int32))
    x = np.ones((2, 4), dtype=np.int8)
    with pytest.raises(ValueError, match="count"):
        _fused.pairs_product(isa, x, np.ones((2, 4), np.int16), np.zeros(4, np.int32), np.zeros(4, np.int32), 5,
                             0, np.empty((2, 2), np.int32))


@pytest.mark.skipif(not {"avx2", "vnni"} <= set(kernels.AVAILABLE), reason="needs both AVX2 and AVX-512 VNNI")
def test_both_isas_give_the_same_integers_even_past_the_proofs():
    # _pairs.h: VPMADDWD + VPADDD and VPDPWSSD wrap the same way modulo 2**32, so even a
    # chunk whose sum leaves int32 comes out the same on both
    rng = np.random.default_rng(8)
    for units in UNIT_WIDTHS + [100]:
        x = rng.integers(-128, 128, (9, 2 * units)).astype(np.int8)
        w = rng.integers(-UNITS_LIMIT, UNITS_LIMIT, (7, 2 * units)).astype(np.int32)
        for chunk in (0, 3, 16):
            np.testing.assert_array_equal(units_product("avx2", x, w, chunk), units_product("vnni", x, w, chunk))
            np.testing.assert_array_equal(pairs_product("avx2", x, w, chunk), pairs_product("vnni", x, w, chunk))


# -- the update ------------------------------------------------------------------------------

def run_update(isa, delta, x, weight, divisor, decay_inv, mirror, capacity=None):
    """The update kernel on a copy of ``weight``: (new weight, max|w|, its mirror, outliers:
    their count for split units, else (count, index, residual) as recorded)."""
    updated, weight_tail = guarded(weight.shape, np.int32, weight)
    if mirror == "split":
        copy, tail = guarded(weight.shape, np.int32)
        bound, count = _fused.units_sgd_update(isa, delta, x, updated, copy, divisor, decay_inv)
        assert_untouched(weight_tail, tail)
        return updated, bound, copy, count
    capacity = weight.size if capacity is None else capacity
    copy, tail = guarded(weight.shape, np.int16)
    (index, index_tail), (residual, residual_tail) = guarded(capacity, np.int32), guarded(capacity, np.int32)
    bound, count = _fused.units_sgd_update(isa, delta, x, updated, copy, divisor, decay_inv, index, residual)
    assert_untouched(weight_tail, tail, index_tail, residual_tail)
    recorded = min(count, capacity)
    return updated, bound, copy, (count, index[:recorded], residual[:recorded])


def expected_update(delta, x, weight, divisor, decay_inv):
    """The reference IntegerSGD step on int64 ``G = delta.T @ x``: (new weight, max|w|)."""
    grad = delta.T.astype(np.int64) @ x.astype(np.int64)
    grad_bound = int(np.abs(grad).max())
    assert grad_bound <= INT32_MAX  # the kernel's precondition
    expected = weight.copy()
    bound = integer_sgd_step(expected, grad, grad_bound, int(np.abs(weight.astype(np.int64)).max()), divisor,
                             decay_inv)
    return expected, bound


def assert_mirror(copy, outliers, expected, mirror):
    """The mirror the update wrote is that of the new weights: by definition, and as the
    kernels ``split_units`` / ``pair_form`` make it from them."""
    if mirror == "split":
        np.testing.assert_array_equal(copy, split_units(expected))
        assert outliers == 0
        return
    pairs, index, residual = expected_pair_form(expected)
    kernel_pairs, kernel_index, kernel_residual, kernel_count = pair_form(expected, capacity=expected.size)
    np.testing.assert_array_equal(copy, pairs)
    np.testing.assert_array_equal(copy, kernel_pairs)
    count, got_index, got_residual = outliers
    assert count == index.size == kernel_count
    np.testing.assert_array_equal(got_index, index)
    np.testing.assert_array_equal(got_residual, residual)
    np.testing.assert_array_equal(got_index, kernel_index[:count])
    np.testing.assert_array_equal(got_residual, kernel_residual[:count])


def assert_update_on_threads(threads, isa, delta, x, weight, divisor, decay_inv, counts=(1, 2),
                             mirrors=("split", "pairs")):
    """The update kernel gives the integer SGD's weights, max|w| and mirror on each of
    ``counts`` OpenMP threads, with each mirror."""
    expected, expected_bound = expected_update(delta, x, weight, divisor, decay_inv)
    for count in counts:
        for mirror in mirrors:
            updated, bound, copy, outliers = threads(count, lambda: run_update(isa, delta, x, weight, divisor,
                                                                               decay_inv, mirror))
            np.testing.assert_array_equal(updated, expected, err_msg=f"{count} threads, {mirror}")
            assert bound == expected_bound
            assert_mirror(copy, outliers, expected, mirror)


# partial AVX2 vectors (8) and update tiles (16), VNNI vectors (16) and tiles (64)
UPDATE_WIDTHS = [1, 7, 8, 9, 15, 16, 17, 33, 64, 65, 130]
UPDATE_ROWS = [(1, 1), (3, 5), (8, 6), (13, 3)]  # (batch, n): n past whole tiles of 4 rows
STEPS = [(1536, 0), (1536, 1), (1536, 7), (1536, 3000), (1, 0), (3, 2**31 - 1), (2**31 - 1, 5)]  # (divisor, decay_inv)


# G's products pair a batch row's split units of delta with x's input units, or, where every
# delta of two rows fits int16, rows of delta and x two by two (_rules.h's row_pair). Each
# form: the range of delta, and the two extremes it takes at random places (where those
# leave int16, their rows, and only theirs, take split units).
DELTA_FORMS = {"split units": ((-(2**17), 2**17 - 1), (-(2**17), 2**17 - 1)),
               "row pairs": ((-(2**15), 2**15 - 1), (-(2**15), 2**15 - 1)),
               "row pairs and split units": ((-(2**15), 2**15 - 1), (-(2**17), 2**17 - 1)),
               "one below int16": ((-(2**15), 2**15 - 1), (-(2**15) - 1, 2**15 - 1)),
               "one above int16": ((-(2**15), 2**15 - 1), (-(2**15), 2**15))}
SWEEP_FORMS = ["row pairs", "row pairs and split units"]  # the sweeps' tests set the extremes


def random_delta(rng, shape, form):
    """Random int32 delta in ``form``'s range, with its two extremes."""
    (low, high), extremes = DELTA_FORMS[form]
    delta = rng.integers(low, high + 1, shape).astype(np.int32)
    delta.flat[rng.choice(delta.size, min(2, delta.size), replace=False)] = extremes[:min(2, delta.size)]
    return delta


@pytest.mark.parametrize("form", DELTA_FORMS)
@pytest.mark.parametrize("mirror", ["split", "pairs"])
@pytest.mark.parametrize("k", UPDATE_WIDTHS)
@pytest.mark.parametrize("divisor, decay_inv", STEPS)
def test_update_matches_integer_sgd(isa, k, divisor, decay_inv, mirror, form):
    rng = np.random.default_rng(k * 31 + divisor % 97 + decay_inv % 89)
    for batch, n in UPDATE_ROWS:  # odd numbers of row pairs' rows: the last pair's second row is zero
        x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
        x.flat[0] = -128
        delta = random_delta(rng, (batch, n), form)
        weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
        # outliers of the pair form (several per row), and weights at int16's edges that
        # the step moves across it either way
        where = rng.choice(n * k, size=min(30, n * k), replace=False)
        weight.flat[where] = rng.choice([2**20, -(2**20), 2**15, -(2**15) - 1, 2**15 - 1, -(2**15)], where.size)
        expected, expected_bound = expected_update(delta, x, weight, divisor, decay_inv)
        updated, bound, copy, outliers = run_update(isa, delta, x, weight, divisor, decay_inv, mirror)
        np.testing.assert_array_equal(updated, expected, err_msg=f"batch={batch} n={n}")
        assert bound == expected_bound
        assert_mirror(copy, outliers, expected, mirror)


@pytest.mark.parametrize("mirror", ["split", "pairs"])
@pytest.mark.parametrize("k", UPDATE_WIDTHS)
def test_update_at_the_extremes_of_the_units(isa, k, mirror):
    # |delta| up to the split units' limit and x = -128: |G| = 128 * 2**23 = 2**30 (one
    # sample), every high half at -32768; with divisor 1 the new weights are -G
    rng = np.random.default_rng(k)
    delta = rng.choice(np.array([-UNITS_LIMIT, UNITS_LIMIT - 1, -1, 255, 256], np.int32), (1, 6))
    delta[0, :2] = [-UNITS_LIMIT, UNITS_LIMIT - 1]
    x = rng.choice(np.array([-128, 127, 0, 1], np.int8), (1, k))
    x[0, 0] = -128
    weight = np.zeros((6, k), np.int32)
    expected, expected_bound = expected_update(delta, x, weight, 1, 0)
    updated, bound, copy, outliers = run_update(isa, delta, x, weight, 1, 0, mirror)
    np.testing.assert_array_equal(updated, expected)
    assert bound == expected_bound == 2**30
    assert_mirror(copy, outliers, expected, mirror)


@pytest.mark.parametrize("mirror", ["split", "pairs"])
def test_update_divides_toward_zero_at_every_remainder(isa, mirror):
    # G = delta[0, j] * x[0, k] takes every value around the multiples of the divisor
    divisor = 1000
    delta = np.arange(-3000, 3001, dtype=np.int32)[None, :]
    x = np.ones((1, 17), dtype=np.int8)
    weight = np.zeros((delta.shape[1], 17), dtype=np.int32)
    updated = run_update(isa, delta, x, weight, divisor, 0, mirror)[0]
    expected = -(np.sign(delta[0]) * (np.abs(delta[0]) // divisor))
    np.testing.assert_array_equal(updated, np.repeat(expected[:, None], 17, axis=1))


@pytest.mark.parametrize("mirror", ["split", "pairs"])
@pytest.mark.parametrize("k", UPDATE_WIDTHS)
def test_update_decays_from_the_decay_divisor_up(isa, k, mirror):
    # the kernels skip the decay's division for a vector whose every |w| is below decay_inv
    # (the term is 0 there): alone among small weights, |w| = decay_inv still decays by one,
    # decay_inv - 1 not at all, -2**30 by its own tdiv
    decay_inv = 3000
    delta = np.zeros((2, 3), np.int32)
    x = np.ones((2, k), np.int8)
    weight = np.full((3, k), 5, np.int32)
    weight[0, k - 1], weight[1, k // 2], weight[2, 0] = decay_inv, -decay_inv, decay_inv - 1
    if k > 2:
        weight[2, 1] = -(2**30)
    expected, expected_bound = expected_update(delta, x, weight, 7, decay_inv)
    assert expected[0, k - 1] == decay_inv - 1 and expected[1, k // 2] == 1 - decay_inv
    updated, bound, copy, outliers = run_update(isa, delta, x, weight, 7, decay_inv, mirror)
    np.testing.assert_array_equal(updated, expected)
    assert bound == expected_bound
    assert_mirror(copy, outliers, expected, mirror)


def test_update_counts_outliers_past_the_lists_capacity(isa):
    # the list holds `capacity` of them (found in tile order, then sorted), the count is whole
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (4, 70)).astype(np.int8)
    delta = rng.integers(-100, 100, (4, 7)).astype(np.int32)
    weight = rng.integers(-1000, 1000, (7, 70)).astype(np.int32)
    weight.flat[rng.choice(weight.size, 40, replace=False)] = 2**17
    expected, expected_bound = expected_update(delta, x, weight, 5, 0)
    pairs, index, residual = expected_pair_form(expected)
    assert index.size == 40
    for capacity in (8, 40):
        updated, bound, copy, (count, got_index, got_residual) = run_update(isa, delta, x, weight, 5, 0, "pairs",
                                                                            capacity=capacity)
        np.testing.assert_array_equal(updated, expected)
        assert bound == expected_bound
        np.testing.assert_array_equal(copy, pairs)
        assert count == 40 and got_index.size == capacity
        assert (np.diff(got_index) > 0).all()  # sorted
        at = np.searchsorted(index, got_index)
        np.testing.assert_array_equal(index[at], got_index)  # true outliers, with their residuals
        np.testing.assert_array_equal(residual[at], got_residual)


def test_update_counts_a_weight_at_int32_min_in_its_maximum(isa):
    # the kernel's contract: the new weights fit int32 -- -2**31 does, and |w| is then 2**31.
    # (PairKernels never gets there: updated_bound keeps every |w| below 2**31.)
    x = np.ones((1, 17), dtype=np.int8)
    weight = np.full((1, 17), 5, dtype=np.int32)
    weight[0, 3] = INT32_MIN + 1
    delta = np.ones((1, 1), np.int32)
    for mirror in ("split", "pairs"):
        updated, bound, copy, outliers = run_update(isa, delta, x, weight, 1, 0, mirror)
        assert updated[0, 3] == INT32_MIN
        assert bound == 2**31
        assert_mirror(copy, outliers, updated, mirror)  # an outlier of the pair form


# -- PairKernels: when the products run, and what they keep of a layer ---------------------

def read_bound(layer, uses_pairs):
    """The ``max|W|`` a forward's proof reads: the pair form's (saturated to int16), or W's."""
    return min(layer.weight_bound, PAIR_LIMIT) if uses_pairs else layer.weight_bound


@pytest.mark.parametrize("inputs", [784, 783, 130, 65, 64])  # even: the pair product; odd: split units
def test_scaled_forward_matches_the_reference(isa, spy, inputs):
    assert inputs >= PAIR_MIN_WIDTH
    pair_kernels = kernels.IMPLEMENTATIONS[isa]
    table = make_activation("nitro_relu").forward_table
    rng = np.random.default_rng(inputs)
    x = rng.integers(-128, 128, (37, inputs)).astype(np.int8)
    x[5] = -128  # the largest row L1 norm there is
    scale = 2**8 * inputs
    for bound in (100, 2**15, 2**19, 2**20 - 1):  # the last ones need chunks (2**20: 16 inputs)
        weight = rng.integers(-bound, bound + 1, (10, inputs)).astype(np.int32)
        layer = layer_with(weight)
        expected = nitro_scale(exact(x, weight), scale)
        np.testing.assert_array_equal(kernels.NUMPY.scaled_forward(layer, x, scale), expected)
        before = dict(spy.calls)
        np.testing.assert_array_equal(pair_kernels.scaled_forward(layer, x, scale), expected)
        scaled, activated = pair_kernels.scaled_forward(layer, x, scale, table)  # the copies, reused
        np.testing.assert_array_equal(scaled, expected)
        np.testing.assert_array_equal(activated, table[expected.view(np.uint8)])
        ran = {name: spy.calls.get(name, 0) - before.get(name, 0) for name in spy.calls}
        copies = layer.kernel_cache
        # the kernels read int8 x itself: nothing of it is made or kept, only copies of W
        assert {field.name for field in dataclasses.fields(copies)} == {"float64", "pairs", "units"}
        assert copies.float64 is None
        if inputs % 2:
            assert copies.units is not None and copies.pairs is None
            assert ran.get(f"units_product/{isa}") == 2 and "pair_form" not in ran
            uses_pairs = False
        else:  # the pair form, unless it has too many outliers
            assert ran.get("pair_form") == 1
            assert (copies.pairs.count > 0) == (bound > 2**15)
            uses_pairs = copies.pairs.count <= OUTLIER_CAPACITY
            assert (copies.units is None) == uses_pairs
            assert ran.get(f"pairs_scaled_product/{isa}" if uses_pairs else f"units_product/{isa}") == 2
        # x's row L1 norms are read only where the factor bound 128 * width * max|W| leaves int32
        assert ran.get("row_l1", 0) == (2 if 128 * inputs * read_bound(layer, uses_pairs) > INT32_MAX else 0)
        # the pair form's product scales in its tiles: no int32 z, no pass over it
        assert ran.get("scale_to_int8", 0) == (0 if uses_pairs else 2) and "sgd_update" not in ran
        assert "pairs_product" not in ran
        assert not any(name.endswith("/" + other) for name in ran for other in ("avx2", "vnni") if other != isa)


@pytest.mark.parametrize("width", [64, 65, 784])
def test_chunk_reads_the_row_l1_norms_only_past_the_factor_bound(spy, width):
    fits = INT32_MAX // (128 * width)  # the largest max|W| for which 128 * width * max|W| fits int32
    x = np.ones((3, width), dtype=np.int8)
    # the factor bound proves whole rows: no pass over x
    assert kernels._chunk(x, fits, 1, width) == width
    assert kernels._chunk(x, fits, 2, width // 2) == width // 2
    assert "row_l1" not in spy.calls
    # past it, x's row L1 norms prove whole rows where they are small enough
    assert kernels._chunk(x, fits + 1, 1, width) == width
    assert spy.calls["row_l1"] == 1
    # a row of -128 meets the factor bound: chunks of whole vectors (16 units) that fit int32
    x[1] = -128
    for per_unit, units in ((1, width), (2, width // 2)):
        chunk = kernels._chunk(x, fits + 1, per_unit, units)
        assert chunk == INT32_MAX // (per_unit * 128 * (fits + 1)) // 16 * 16
        assert chunk > 0 and chunk % 16 == 0 and per_unit * 128 * (fits + 1) * chunk <= INT32_MAX
    assert spy.calls["row_l1"] == 3
    # at the edge of the row L1 norm's proof
    x[1, 0] = 1
    l1 = 128 * (width - 1) + 1
    assert _fused.row_l1(x) == l1
    edge = INT32_MAX // l1
    assert edge > fits
    assert kernels._chunk(x, edge, 1, width) == width
    assert kernels._chunk(x, edge + 1, 1, width) == INT32_MAX // (128 * (edge + 1)) // 16 * 16
    assert spy.calls["row_l1"] == 5


@pytest.mark.parametrize("inputs", [9, 27, 62, 63, 64, 65])
def test_inputs_narrower_than_64_columns_run_on_split_units(isa, spy, inputs):
    # a narrow input (a first conv layer's 9 or 27 patch values) would leave most of a tile
    # along the inputs empty: below 64 columns the forward reads the split units, even for
    # an even width (the narrow kernels: outputs in the lanes), with the same integers; from
    # 64 columns on, an even width reads the pair form
    assert kernels.PAIR_MIN_WIDTH == 64
    pair_kernels = kernels.IMPLEMENTATIONS[isa]
    rng = np.random.default_rng(inputs)
    layer = layer_with(rng.integers(-(2**16), 2**16, (10, inputs)))  # outliers of the pair form
    reference = reference_layer(layer)
    scale = 2**8 * inputs
    for step in range(3):  # the later forwards read what the last update left
        x = rng.integers(-128, 128, (9, inputs)).astype(np.int8)
        x[step] = -128
        expected = kernels.NUMPY.scaled_forward(reference, x, scale)
        np.testing.assert_array_equal(expected, nitro_scale(exact(x, reference.weight), scale))
        np.testing.assert_array_equal(pair_kernels.scaled_forward(layer, x, scale), expected)
        delta = rng.integers(-2000, 2000, (9, 10)).astype(np.int32)
        kernels.NUMPY.sgd_update(reference, delta, x, 16, 3000)
        pair_kernels.sgd_update(layer, delta, x, 16, 3000)
        np.testing.assert_array_equal(layer.weight, reference.weight)
        assert layer.weight_bound == reference.weight_bound == np.abs(reference.weight).max()
        copies = layer.kernel_cache
        if inputs < 64 or inputs % 2:
            np.testing.assert_array_equal(copies.units, split_units(reference.weight))
            assert copies.pairs is None and copies.float64 is None
        else:
            np.testing.assert_array_equal(copies.pairs.pairs, expected_pair_form(reference.weight)[0])
            assert copies.units is None and copies.float64 is None
    # (below 64 columns, with whole rows in int32, the narrow kernel scales in its lanes: no z)
    product = "narrow_scaled_product" if inputs < 64 else "units_product" if inputs % 2 else "pairs_scaled_product"
    assert spy.calls[f"{product}/{isa}"] == 3 and spy.calls[f"units_sgd_update/{isa}"] == 3
    assert "sgd_update" not in spy.calls


def test_too_many_outliers_switch_the_forward_to_split_units(isa, spy):
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (8, 64)).astype(np.int8)
    weight = np.full((OUTLIER_CAPACITY // 64 + 1, 64), 2**16, dtype=np.int32)  # all past int16
    layer = layer_with(weight)
    expected = nitro_scale(exact(x, weight), 2**8 * 64)
    np.testing.assert_array_equal(kernels.IMPLEMENTATIONS[isa].scaled_forward(layer, x, 2**8 * 64), expected)
    assert layer.kernel_cache.pairs.count > OUTLIER_CAPACITY and layer.kernel_cache.units is not None
    assert spy.calls[f"units_product/{isa}"] == 1 and f"pairs_scaled_product/{isa}" not in spy.calls


def _hand_back_cases():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (4, 64)).astype(np.int8)
    biased = IntegerLinear(64, 3, 5, np.random.default_rng(0), bias=True)
    biased.bias[:] = [3, -4, 5]
    biased.refresh_bounds()
    wide = np.repeat(x, 2, axis=1)
    narrow = np.ascontiguousarray(x[:, :62])
    pair_kernels = ["pair_form", "split_units", "row_l1", "pairs_scaled_product", "units_product"]
    return {
        # (layer, x, scale, the C functions that must run, those that must not)
        "pair form: no limit": (layer_with(np.full((3, 64), UNITS_LIMIT)), x, 256,
                                ["pair_form", "pairs_scaled_product"],
                                ["row_l1", "units_product", "split_units", "scale_to_int8"]),
        "too many outliers, past the split units": (
            layer_with(np.full((OUTLIER_CAPACITY // 64 + 1, 64), UNITS_LIMIT)), x, 256,
            ["pair_form", "scale_to_int8"], ["pairs_scaled_product", "units_product", "split_units", "row_l1"]),
        "odd width, chunks of 0 inputs": (
            layer_with(np.full((3, 65), 2**20)), np.full((4, 65), -128, np.int8), 256, ["row_l1", "scale_to_int8"],
            ["units_product", "split_units"]),
        "int16 input past 2**14": (layer_with(np.ones((3, 64))), x.astype(np.int16) * 200, 256,
                                   ["scale_to_int8"], pair_kernels),
        "strided input": (layer_with(np.ones((3, 64))), wide[:, ::2], 256, ["scale_to_int8"], pair_kernels),
        "narrow input, past the split units": (layer_with(np.full((3, 62), UNITS_LIMIT)), narrow,
                                               256, ["scale_to_int8"], pair_kernels),
        "128 * scale past int32": (layer_with(np.ones((3, 64))), x, 2**24, [], pair_kernels + ["scale_to_int8"]),
        "bias": (biased, x, 256, [], pair_kernels + ["scale_to_int8"]),
    }


@pytest.mark.parametrize("case", list(_hand_back_cases()))
def test_scaled_forward_hands_back_outside_its_bounds(isa, spy, case):
    # outside its bounds PairKernels calls its parent (the "c" kernels, which may call the
    # NumPy reference in turn): the integers are the same either way
    layer, x, scale, runs, skips = _hand_back_cases()[case]
    expected = kernels.NUMPY.scaled_forward(layer, x, scale)
    np.testing.assert_array_equal(expected, nitro_scale(exact(x, layer.weight) + (
        0 if layer.bias is None else layer.bias.astype(np.int64)), scale))
    np.testing.assert_array_equal(kernels.IMPLEMENTATIONS[isa].scaled_forward(layer, x, scale), expected)
    for name in runs:
        assert spy.calls.get(f"{name}/{isa}" if name.endswith("product") else name, 0) == 1, name
    for name in skips:
        assert name not in spy.calls and f"{name}/{isa}" not in spy.calls, name


def reference_layer(layer):
    return IntegerLinear.from_weight(layer.weight.copy())


@pytest.mark.parametrize("inputs", [64, 65, 130, 129])  # even: the pair form; odd: split units
def test_layer_update_keeps_the_copies_consistent(isa, spy, inputs):
    pair_kernels = kernels.IMPLEMENTATIONS[isa]
    rng = np.random.default_rng(3)
    layer = layer_with(rng.integers(-1000, 1000, (6, inputs)))
    reference = reference_layer(layer)
    scale = 2**8 * inputs
    layer.kernel_cache = LayerCopies(float64=layer.weight.astype(np.float64))  # a copy the update makes stale
    for step in range(3):  # the later steps read, then rewrite, the copy the last one wrote
        x = rng.integers(-128, 128, (8, inputs)).astype(np.int8)
        pair_kernels.scaled_forward(layer, x, scale)
        assert (layer.kernel_cache.float64 is not None) == (step == 0)
        delta = rng.integers(-500, 500, (8, 6)).astype(np.int32)
        delta[0, step] = 3000  # a row of weights leaves int16
        kernels.NUMPY.sgd_update(reference, delta, x, 4, 0)
        pair_kernels.sgd_update(layer, delta, x, 4, 0)
        assert spy.calls[f"units_sgd_update/{isa}"] == step + 1
        expected = reference.weight
        np.testing.assert_array_equal(layer.weight, expected)
        assert layer.weight_bound == reference.weight_bound == np.abs(expected).max() > 2**15
        copies = layer.kernel_cache
        if inputs % 2:
            np.testing.assert_array_equal(copies.units, split_units(expected))
            assert copies.pairs is None
        else:
            pairs, index, residual = expected_pair_form(expected)
            np.testing.assert_array_equal(copies.pairs.pairs, pairs)
            assert copies.pairs.count == index.size > 0 and copies.units is None
            np.testing.assert_array_equal(copies.pairs.index[:index.size], index)
            np.testing.assert_array_equal(copies.pairs.residual[:index.size], residual)
        assert copies.float64 is None  # the stale copy dropped
        # the next forward reads the copy the update wrote
        np.testing.assert_array_equal(pair_kernels.scaled_forward(layer, x, scale),
                                      nitro_scale(exact(x, expected), scale))
    # the first forward makes the copy of W, the updates keep it; the "c" kernels never run
    assert spy.calls.get("split_units", 0) == inputs % 2 and spy.calls.get("pair_form", 0) == 1 - inputs % 2
    assert "sgd_update" not in spy.calls


def _update_cases():
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (8, 64)).astype(np.int8)
    delta = rng.integers(-50, 50, (8, 6)).astype(np.int32)
    big = np.zeros((1, 6), np.int32)
    big[0, 0] = UNITS_LIMIT  # G = 128 * 2**23 = 2**30 fits int32, delta's split units do not
    return {
        # (delta, x, divisor, column_l1, delta_bound, the C function that must run: "sgd_update"
        # for the "c" kernels)
        "delta past the split units": (big, x[:1], 64, None, None, "sgd_update"),
        "delta past the split units, as its bound says": (big, x[:1], 64, None, UNITS_LIMIT, "sgd_update"),
        "int64 delta": (delta.astype(np.int64), x, 64, None, None, "sgd_update"),
        "int16 input past 2**14": (delta, x.astype(np.int16) * 200, 64, None, None, "sgd_update"),
        "strided input": (delta, np.repeat(x, 2, axis=1)[:, ::2], 64, None, None, "sgd_update"),
        "narrow input, delta past the split units": (big, np.ascontiguousarray(x[:1, :9]), 64, None, None,
                                                     "sgd_update"),
        "divisor past 32 bits": (delta, x, 2**31, None, None, None),
    }


@pytest.mark.parametrize("case", list(_update_cases()))
def test_update_hands_back_outside_its_bounds(isa, spy, case):
    # as for the forward: outside its bounds the update is the parent's, same integers
    delta, x, divisor, column_l1, delta_bound, runs = _update_cases()[case]
    width = x.shape[1]
    layer = layer_with(np.arange(-3 * width, 3 * width).reshape(6, width))
    reference = reference_layer(layer)
    kernels.NUMPY.sgd_update(reference, delta, x, divisor, 0, column_l1=column_l1)
    kernels.IMPLEMENTATIONS[isa].sgd_update(layer, delta, x, divisor, 0, delta_bound, column_l1)
    np.testing.assert_array_equal(layer.weight, reference.weight)
    assert layer.weight_bound == reference.weight_bound
    assert f"units_sgd_update/{isa}" not in spy.calls
    assert spy.calls.get("sgd_update", 0) == (runs == "sgd_update")


@pytest.mark.parametrize("width", [9, 64])
def test_update_proves_the_split_units_from_the_largest_delta(isa, spy, width):
    # A conv layer's delta: one row per output position, every entry small. Its column L1
    # norms pass UNITS_LIMIT (G still fits int32), so they alone cannot prove delta's split
    # units; max|delta|, which the activation's backward hands over, does.
    rng = np.random.default_rng(width)
    rows = 4096
    x = rng.integers(-128, 128, (rows, width)).astype(np.int8)
    delta = (rng.integers(3000, 4097, (rows, 6)) * rng.choice([-1, 1], (rows, 6))).astype(np.int32)
    column_l1 = int(np.abs(delta.astype(np.int64)).sum(axis=0).max())
    assert UNITS_LIMIT < column_l1 and 128 * column_l1 <= INT32_MAX
    for delta_bound, runs in [(None, "sgd_update"), (int(np.abs(delta).max()), f"units_sgd_update/{isa}")]:
        spy.calls.clear()
        layer = layer_with(rng.integers(-1000, 1000, (6, width)))
        reference = reference_layer(layer)
        kernels.NUMPY.sgd_update(reference, delta, x, 2**20, 0, column_l1=column_l1)
        kernels.IMPLEMENTATIONS[isa].sgd_update(layer, delta, x, 2**20, 0, delta_bound, column_l1)
        np.testing.assert_array_equal(layer.weight, reference.weight)
        assert layer.weight_bound == reference.weight_bound and spy.calls[runs] == 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width, rows", [(9, 4096), (64, 4096), (65, 4096), (64, 200)])
def test_update_sums_a_gradient_past_int32(isa, spy, threads, width, rows):
    # A conv layer's G sums over every position of every image: here past int32 (up to about
    # 2**35; column 3's stays within). The kernels sum it in int32 while a bound of max|delta|
    # per row says those sums cannot overflow, and in int64 across: row pairs where every delta
    # fits int16 (rows 0-1023), split units elsewhere, and calls of fewer rows the larger
    # |delta| is (2**23 - 1 in rows 2000-2100). A narrow layer's kernel (9 inputs); tiles of G
    # summed over the batch by one thread or by parts on two (64, and 65: split units); a
    # batch of 200 rows, whose G would otherwise stay in registers.
    rng = np.random.default_rng(width + rows)
    x = rng.integers(100, 128, (rows, width)).astype(np.int8)
    x[: rows // 3] *= -1
    delta = rng.integers(60000, 65536, (rows, 6)).astype(np.int32)
    delta[:, 1] *= -1
    delta[:, 3] = rng.integers(-300, 300, rows)
    delta[:1024, :3] = rng.integers(30000, 32768, (min(rows, 1024), 3))
    delta[2000:2101, 0] = UNITS_LIMIT - 1
    delta[:50, 2] = UNITS_LIMIT - 1  # a small batch's G past int32
    layer = layer_with(rng.integers(-2000, 2000, (6, width)))
    reference = reference_layer(layer)
    column_l1 = int(np.abs(delta.astype(np.int64)).sum(axis=0).max())
    kernels.NUMPY.sgd_update(reference, delta, x, 2**20, 1000, column_l1=column_l1)
    with threadpool_limits(threads):
        kernels.IMPLEMENTATIONS[isa].sgd_update(layer, delta, x, 2**20, 1000, UNITS_LIMIT - 1, column_l1)
    grad = np.abs(delta.T.astype(np.int64) @ x.astype(np.int64))
    assert grad.max() > INT32_MAX and grad[3].max() < INT32_MAX
    np.testing.assert_array_equal(layer.weight, reference.weight)
    assert layer.weight_bound == reference.weight_bound
    assert spy.calls[f"units_sgd_update/{isa}"] == 1 and "sgd_update" not in spy.calls
    if width % 2 == 0 and width >= PAIR_MIN_WIDTH:  # the pair form and its outliers, as the update left them
        copies = layer.kernel_cache.pairs
        assert copies.count == int((np.abs(reference.weight) > 32767).sum())
        np.testing.assert_array_equal(copies.pairs, np.clip(reference.weight, -32768, 32767))


def test_update_drops_the_split_units_past_their_range(isa, spy):
    x = np.ones((1, 65), dtype=np.int8)  # odd width: split units
    layer = layer_with(np.full((1, 65), UNITS_LIMIT - 2))
    pair_kernels = kernels.IMPLEMENTATIONS[isa]
    pair_kernels.sgd_update(layer, np.full((1, 1), -10, dtype=np.int32), x, 1, 0)
    assert spy.calls[f"units_sgd_update/{isa}"] == 1
    np.testing.assert_array_equal(layer.weight, UNITS_LIMIT + 8)
    assert layer.weight_bound == UNITS_LIMIT + 8 and layer.kernel_cache.units is None
    # the next forward cannot use split units: the "c" kernels take over, same integers
    np.testing.assert_array_equal(pair_kernels.scaled_forward(layer, x, 256), nitro_scale(exact(x, layer.weight), 256))
    assert "units_product" not in spy.calls and spy.calls["scale_to_int8"] == 1
    assert "split_units" not in spy.calls and "row_l1" not in spy.calls


# -- threads ---------------------------------------------------------------------------------

def openmp_thread_counts():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp"]


def on_threads(count, function):
    """``function()`` with the OpenMP runtimes limited to ``count`` threads."""
    with threadpool_limits(count):
        assert set(openmp_thread_counts()) == {count}
        return function()


@pytest.fixture
def threads():
    if not openmp_thread_counts():
        pytest.skip("no OpenMP runtime loaded: the kernels run on one thread anyway")
    return on_threads


def test_thread_count_does_not_change_the_products(isa, threads):
    # m * n * units past PARALLEL_WORK (2**20): both products split their row blocks over
    # the threads; partial tiles at the edges, outliers in most rows of w
    rng = np.random.default_rng(11)
    m, n, width = 67, 258, 130
    assert m * n * width // 2 >= 2**20
    x = rng.integers(-128, 128, (m, width)).astype(np.int8)
    w = rng.integers(-(2**15), 2**15, (n, width)).astype(np.int32)
    where = rng.choice(w.size, 600, replace=False)
    w.flat[where] = rng.integers(2**15, 2**19, where.size) * rng.choice([-1, 1], where.size)
    expected = saturated(exact(x, w))

    def products():
        # units: chunks of 16 (128 * 2**19 * 16 = 2**30); pairs: whole rows (2**24 per pair)
        return units_product(isa, x, w, chunk=16), pairs_product(isa, x, w), pairs_product(isa, x, w, chunk=16)

    one, two = threads(1, products), threads(2, products)
    for single, parallel in zip(one, two):
        np.testing.assert_array_equal(single, expected)
        np.testing.assert_array_equal(parallel, expected)


@pytest.mark.parametrize("mirror", ["split", "pairs"])
def test_thread_count_does_not_change_the_update(isa, threads, mirror):
    # n * batch * k past PARALLEL_WORK: the column tiles go to different threads, and each
    # records the outliers it finds; the list must come out whole, sorted, the same
    rng = np.random.default_rng(12)
    batch, n, k = 64, 258, 130
    assert n * batch * k >= 2**20
    x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
    delta = rng.integers(-(2**12), 2**12, (batch, n)).astype(np.int32)
    weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    weight.flat[rng.choice(weight.size, 500, replace=False)] = 2**18
    expected, expected_bound = expected_update(delta, x, weight, 64, 3000)

    def update():
        return run_update(isa, delta, x, weight, 64, 3000, mirror)

    one, two = threads(1, update), threads(2, update)
    for updated, bound, copy, outliers in (one, two):
        np.testing.assert_array_equal(updated, expected)
        assert bound == expected_bound
        assert_mirror(copy, outliers, expected, mirror)
    if mirror == "pairs":
        assert one[3][0] > 400 and (np.diff(two[3][1]) > 0).all()


@pytest.mark.parametrize("form", SWEEP_FORMS)
@pytest.mark.parametrize("mirror", ["split", "pairs"])
def test_update_sweeps_row_blocks_over_groups_of_tiles(isa, threads, mirror, form):
    # more than GRADIENT_ROW_BLOCK (256) rows of units (261 row pairs, the last one's second
    # row zero; or 260 and the two rows of the extremes as split units): two sweeps, the last
    # partial; G of 301 + 3 rows per tile past GRADIENT_G_BYTES (512 KiB) over all tiles: the
    # tiles go in groups (AVX2: 29 of 16 columns, VNNI: 8 of 64), the last partial; n not a
    # multiple of 4: the padded delta rows. The form's extremes in the first and last rows.
    rng = np.random.default_rng(14)
    batch, n, k = 521, 301, 453
    x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
    delta = rng.integers(-(2**12), 2**12, (batch, n)).astype(np.int32)
    delta[0, 7], delta[-1, n - 1] = DELTA_FORMS[form][1]
    weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    weight.flat[rng.choice(weight.size, 300, replace=False)] = 2**18
    assert_update_on_threads(threads, isa, delta, x, weight, 512, 3000, mirrors=(mirror,))


def test_narrow_update_pairs_the_rows_of_blocks_whose_delta_fits_int16(isa, threads):
    # a narrow layer (9 inputs) sums G over blocks of 256 rows: a block whose every delta
    # fits int16 goes as row pairs (the last block: 189 rows, its last pair's second row zero),
    # the block holding -32769 as split units; each with int16's extremes
    rng = np.random.default_rng(17)
    batch, n, k = 701, 32, 9
    x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
    delta = rng.integers(-(2**15), 2**15, (batch, n)).astype(np.int32)
    delta[0, 0], delta[255, 31], delta[-1, 5] = -(2**15), 2**15 - 1, -(2**15)
    delta[300, 7] = -(2**15) - 1
    weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    assert_update_on_threads(threads, isa, delta, x, weight, 2**20, 3000)


@pytest.mark.parametrize("form", SWEEP_FORMS)
def test_update_cuts_the_batch_of_a_small_layer_for_the_threads(isa, threads, form):
    # 5 tiles, all in one group of G: on 2 or 3 threads the batch goes in 2 or 3 parts (row
    # blocks of 256 inside each, the last part shorter), whose G are added up before the
    # update; every thread count gives the integer SGD's weights
    rng = np.random.default_rng(16)
    batch, n, k = 1999, 64, 288
    x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
    delta = rng.integers(-(2**10), 2**10, (batch, n)).astype(np.int32)
    delta[0, 3], delta[-1, n - 1] = DELTA_FORMS[form][1]
    weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    weight.flat[rng.choice(weight.size, 50, replace=False)] = 2**17
    assert_update_on_threads(threads, isa, delta, x, weight, 4096, 3000, counts=(1, 2, 3))


@pytest.mark.parametrize("form", SWEEP_FORMS)
@pytest.mark.parametrize("mirror", ["split", "pairs"])
def test_update_sweeps_agree_at_the_row_block(isa, mirror, form):
    # a batch of GRADIENT_ROW_BLOCK (256) rows keeps each tile's G in registers and applies it
    # at once; one more row (of zero delta: the same G) takes the grouped sweep through memory.
    # Both give the integer SGD's weights; n and k past whole tiles of 4 rows and 64 columns.
    rng = np.random.default_rng(15)
    n, k = 71, 150
    x = rng.integers(-128, 128, (257, k)).astype(np.int8)
    delta = rng.integers(-(2**12), 2**12, (257, n)).astype(np.int32)
    delta[-1] = 0
    delta[0, n - 1], delta[1, 0] = DELTA_FORMS[form][1]
    weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    weight.flat[rng.choice(weight.size, 100, replace=False)] = -(2**18)
    expected, expected_bound = expected_update(delta, x, weight, 512, 3000)
    for rows in (256, 257):
        updated, bound, copy, outliers = run_update(isa, delta[:rows], x[:rows], weight, 512, 3000, mirror)
        np.testing.assert_array_equal(updated, expected, err_msg=f"batch={rows}")
        assert bound == expected_bound
        assert_mirror(copy, outliers, expected, mirror)


def test_thread_count_keeps_the_outlier_count_past_the_capacity(isa, threads):
    # past the capacity the threads race for the list's slots: which outliers it holds may
    # differ (the layers then use split units), but the count, the pair form and the
    # weights may not, and what it holds is sorted and true
    rng = np.random.default_rng(13)
    batch, n, k = 64, 130, 258
    x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
    delta = rng.integers(-(2**10), 2**10, (batch, n)).astype(np.int32)
    weight = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    weight.flat[rng.choice(weight.size, 2 * OUTLIER_CAPACITY, replace=False)] = -(2**19)
    expected, expected_bound = expected_update(delta, x, weight, 64, 0)
    pairs, index, residual = expected_pair_form(expected)

    def update():
        return run_update(isa, delta, x, weight, 64, 0, "pairs", capacity=OUTLIER_CAPACITY)

    for updated, bound, copy, (count, got_index, got_residual) in (threads(1, update), threads(2, update)):
        np.testing.assert_array_equal(updated, expected)
        assert bound == expected_bound
        np.testing.assert_array_equal(copy, pairs)
        assert count == index.size > OUTLIER_CAPACITY and got_index.size == OUTLIER_CAPACITY
        assert (np.diff(got_index) > 0).all()
        at = np.searchsorted(index, got_index)
        np.testing.assert_array_equal(index[at], got_index)
        np.testing.assert_array_equal(residual[at], got_residual)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k, n", [(1, 1), (9, 32), (27, 7), (9, 17), (63, 40), (2, 130)])
def test_narrow_scaled_product_is_the_product_scaled(isa, threads, k, n):
    # the narrow kernel's lanes go through NITRO scaling (tdiv toward zero, the +-127 clip) and
    # the activation table without z in memory: the same int8 as units_product + scale_to_int8;
    # rows past whole blocks of 8, outputs past whole vectors (8 on AVX2, 16 on VNNI), scales
    # that leave remainders either way and that saturate; 2 threads split 6000 rows
    rng = np.random.default_rng(k * 100 + n)
    x = rng.integers(-128, 128, (6003, k)).astype(np.int8)
    x[0] = -128
    w = rng.integers(-(2**15), 2**15, (n, k)).astype(np.int32)
    units = split_units(w)
    z = np.empty((x.shape[0], n), np.int32)
    _fused.units_product(isa, x, units, 0, z)
    np.testing.assert_array_equal(z, exact(x, w))
    table = rng.integers(-128, 128, 256).astype(np.int8)
    for scale in (1, 3, 2**8 * k, 2**20):
        scaled, activated = np.empty((x.shape[0], n), np.int8), np.empty((x.shape[0], n), np.int8)
        with threadpool_limits(threads):
            _fused.narrow_scaled_product(isa, x, units, scale, scaled, table, activated)
        expected = nitro_scale(z, scale)
        np.testing.assert_array_equal(scaled, expected)
        np.testing.assert_array_equal(activated, table[expected.view(np.uint8)])
        alone = np.empty_like(scaled)
        _fused.narrow_scaled_product(isa, x, units, scale, alone)
        np.testing.assert_array_equal(alone, expected)
    assert (nitro_scale(z, 1) == 127).any() and (nitro_scale(z, 1) == -127).any()
    wide = np.ones((3, 64), np.int8)  # 64 inputs and more: the tiles along k, not these kernels
    with pytest.raises(ValueError, match="fewer than 64"):
        _fused.narrow_scaled_product(isa, wide, np.ones((n, 64), np.int32), 60, np.empty((3, n), np.int8))


# -- int16 input (dropout's output past a rate of 0.25) as int8 digits -----------------------

def test_int8_digits_by_hand():
    x = np.array([[-300, 5, 127, 255], [0, -1, -128, 254]], np.int16)
    digits, shift, bound = kernels._int8_digits(x)
    assert bound == 300
    # -300 >> 1 = -150 leaves int8, -300 >> 2 = -75 does not: shift 2
    assert shift == 2 and digits.dtype == np.int8
    np.testing.assert_array_equal(digits, [[0, 1, 3, 3], [0, 3, 0, 2],  # x & 3
                                           [-75, 1, 31, 63], [0, -1, -32, 63]])  # x >> 2
    fits, shift, _ = kernels._int8_digits(np.array([[-128, 127]], np.int16))
    assert shift == 0 and fits.dtype == np.int8 and fits.tolist() == [[-128, 127]]
    assert kernels._int8_digits(np.array([[2**14]], np.int16)) is None  # x >> 7 = 128
    assert kernels._int8_digits(np.array([[-(2**14) - 1]], np.int16)) is None
    assert kernels._int8_digits(np.array([[2**14 - 1, -(2**14)]], np.int16))[1] == 7
    for other in (x.astype(np.int32), x[:, ::2], x[0], x[:0]):
        assert kernels._int8_digits(other) is None


@pytest.mark.parametrize("limit", [127, 128, 181, 254, 255, 1000, 2**14 - 1])
def test_int8_digits_make_the_integers_with_the_smallest_shift(limit):
    rng = np.random.default_rng(limit)
    x = rng.integers(-limit - 1, limit + 1, (50, 33)).astype(np.int16)
    x[0, :2] = [-limit - 1, limit]
    digits, shift, bound = kernels._int8_digits(x)
    assert bound == np.abs(x.astype(np.int64)).max()
    if shift == 0:  # x itself, as int8
        np.testing.assert_array_equal(digits, x)
        assert digits.dtype == np.int8 and limit == 127
        return
    low, high = digits[:50].astype(np.int64), digits[50:].astype(np.int64)
    np.testing.assert_array_equal(low + (high << shift), x)
    assert ((0 <= low) & (low < 2**shift)).all()
    smaller = shift - 1  # the shift before would leave int8
    assert shift == 0 or not (-128 <= x >> smaller).all() or not (x >> smaller <= 127).all()


INT16_INPUTS = {  # the largest |x|: dropout at 0.3 (127 / 0.7), 0.5, 0.9, and the digits' limit
    "p=0.3": 181, "p=0.5": 254, "p=0.9": 1270, "2**14 - 1": 2**14 - 1, "fits int8": 127}


@pytest.mark.parametrize("inputs", [64, 65, 784])  # even: the pair form; odd: split units
@pytest.mark.parametrize("largest", list(INT16_INPUTS.values()), ids=list(INT16_INPUTS))
def test_scaled_forward_of_int16_input_runs_on_digits(isa, spy, inputs, largest):
    pair_kernels = kernels.IMPLEMENTATIONS[isa]
    rng = np.random.default_rng(inputs + largest)
    x = rng.integers(-largest, largest + 1, (37, inputs)).astype(np.int16)
    x[3] = largest
    shift = kernels._int8_digits(x)[1]
    low_l1 = int((x & ((1 << shift) - 1)).sum(axis=1).max())
    scale = 2**8 * inputs
    for bound in (1, 100, 2**15, 2**19):
        weight = rng.integers(-bound, bound + 1, (10, inputs)).astype(np.int32)
        weight[0] = bound  # z[3, 0] = largest * bound * inputs: past int32 for the larger ones
        layer = layer_with(weight)
        z = exact(x, weight)
        if inputs == 784 and bound == 2**15 and shift:
            assert z[3, 0] > INT32_MAX  # the high digits' part saturates: so does z
        expected = nitro_scale(z, scale)
        before = dict(spy.calls)
        np.testing.assert_array_equal(pair_kernels.scaled_forward(layer, x, scale), expected)
        ran = {name: spy.calls.get(name, 0) - before.get(name, 0) for name in spy.calls}
        products = sum(ran.get(f"{name}/{isa}", 0)
                       for name in ("pairs_product", "units_product", "pairs_scaled_product"))
        # the digits' products, unless the low digits' part could pass int32 (then float64 BLAS)
        on_digits = shift == 0 or low_l1 * bound <= INT32_MAX
        assert products == on_digits, (bound, ran)
        if on_digits:  # no float64 copy of W: the "c" kernels did not run
            assert layer.kernel_cache.float64 is None


@pytest.mark.parametrize("inputs", [64, 65, 784])
@pytest.mark.parametrize("largest", list(INT16_INPUTS.values()), ids=list(INT16_INPUTS))
@pytest.mark.parametrize("batch", [8, 300])  # whole-batch updates, and tile groups
def test_update_of_int16_input_runs_on_digits(isa, spy, inputs, largest, batch):
    pair_kernels = kernels.IMPLEMENTATIONS[isa]
    rng = np.random.default_rng(inputs * largest + batch)
    x = rng.integers(-largest, largest + 1, (batch, inputs)).astype(np.int16)
    layer = layer_with(rng.integers(-(2**16), 2**16, (12, inputs)))
    reference = reference_layer(layer)
    for step in range(2):
        delta = rng.integers(-3000, 3000, (batch, 12)).astype(np.int32)
        delta[0, step] = 40000  # a row past int16: split units beside the row pairs
        kernels.NUMPY.sgd_update(reference, delta, x, 512, 1000)
        pair_kernels.sgd_update(layer, delta, x, 512, 1000)
        np.testing.assert_array_equal(layer.weight, reference.weight)
        assert layer.weight_bound == reference.weight_bound
    assert spy.calls[f"units_sgd_update/{isa}"] == 2 and "sgd_update" not in spy.calls
    # and the next forward reads the copy the updates wrote
    np.testing.assert_array_equal(pair_kernels.scaled_forward(layer, x, 2**20),
                                  nitro_scale(exact(x, reference.weight), 2**20))


def test_digits_update_hands_back_where_the_shifted_delta_leaves_the_split_units(isa, spy):
    # |delta| * 2**shift past 2**23: the "c" kernels' float64 update, the same integers
    rng = np.random.default_rng(9)
    x = rng.integers(-1270, 1271, (8, 64)).astype(np.int16)  # shift 4
    delta = rng.integers(-100, 100, (8, 6)).astype(np.int32)
    delta[2, 3] = 2**20  # 2**24 once shifted
    layer = layer_with(rng.integers(-1000, 1000, (6, 64)))
    reference = reference_layer(layer)
    kernels.NUMPY.sgd_update(reference, delta, x, 2**16, 0)
    kernels.IMPLEMENTATIONS[isa].sgd_update(layer, delta, x, 2**16, 0)
    np.testing.assert_array_equal(layer.weight, reference.weight)
    assert f"units_sgd_update/{isa}" not in spy.calls and spy.calls["sgd_update"] == 1
