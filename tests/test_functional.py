"""Tests for the integer primitives of algorithm.md §1 (sknitro.nn.functional)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sknitro.nn.functional import INT8_MAX, isqrt, tdiv, to_int8

SIGNED_DTYPES = [np.int8, np.int16, np.int32, np.int64]
INT64_MAX = 2**63 - 1


def c_trunc_div(a: int, d: int) -> int:
    """Reference C division on Python ints: |a| // |d| with the sign of a * d."""
    q = abs(a) // abs(d)
    return -q if (a < 0) != (d < 0) else q


def divisors():
    # small divisors (the common case), powers of two (the shift path), divisors around the
    # int8/int16/int32 limits, and anything else in the int64 range; never 0
    return st.one_of(
        st.integers(-300, 300),
        st.integers(0, 62).map(lambda k: 2**k),
        st.integers(0, 62).map(lambda k: -(2**k)),
        st.sampled_from([127, 128, -128, 255, 32767, 32768, -32769, 2**31 - 1, 2**31, -(2**31),
                         2**40, INT64_MAX, -INT64_MAX]),
        st.integers(-INT64_MAX, INT64_MAX),
    ).filter(lambda d: d != 0)


@st.composite
def array_and_divisor(draw):
    dtype = draw(st.sampled_from(SIGNED_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=8))
    info = np.iinfo(dtype)
    # bias the elements towards the extremes, where shift/mask tricks go wrong
    elements = st.one_of(st.integers(int(info.min), int(info.max)),
                         st.sampled_from([int(info.min), int(info.min) + 1, -1, 0, 1, int(info.max)]))
    a = draw(hnp.arrays(dtype, shape, elements=elements))
    return a, draw(divisors())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(array_and_divisor())
def test_tdiv_matches_c_truncated_division(case):
    a, d = case
    info = np.iinfo(a.dtype)
    before = a.copy()

    q = tdiv(a, d)

    expected = [c_trunc_div(int(v), d) for v in a.ravel().tolist()]
    assert q.ravel().tolist() == expected
    assert q.shape == a.shape
    # same dtype as a for a positive divisor that fits it; int64 otherwise (negative
    # divisors included, so that min / -1 cannot wrap)
    expected_dtype = a.dtype if 0 < d <= info.max else np.dtype(np.int64)
    assert q.dtype == expected_dtype
    np.testing.assert_array_equal(a, before)  # the input is never modified


def test_tdiv_published_examples():
    assert int(tdiv(np.array(-7), 4)) == -1
    assert int(tdiv(np.array(7), 4)) == 1
    assert int(tdiv(np.int64(-7), 4)) == -1
    assert int(tdiv(np.int64(7), 4)) == 1
    # NumPy's // floors: the reason tdiv exists
    assert -7 // 4 == -2


def test_tdiv_truncates_toward_zero_for_all_sign_combinations():
    a = np.array([-9, -8, -7, -1, 0, 1, 7, 8, 9], dtype=np.int32)
    np.testing.assert_array_equal(tdiv(a, 4), [-2, -2, -1, 0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(tdiv(a, -4), [2, 2, 1, 0, 0, 0, -1, -2, -2])
    np.testing.assert_array_equal(tdiv(a, 1), a)
    np.testing.assert_array_equal(tdiv(a, -1), -a)


@pytest.mark.parametrize("dtype", SIGNED_DTYPES)
def test_tdiv_preserves_dtype(dtype):
    info = np.iinfo(dtype)
    a = np.array([info.min, -5, 0, 5, info.max], dtype=dtype)
    for d in (1, 2, 3, int(info.max)):
        q = tdiv(a, d)
        assert q.dtype == np.dtype(dtype), (dtype, d)
    assert tdiv(a, -3).dtype == np.int64
    if info.bits < 64:  # (int64's min / -1 has no int64 result, as in C)
        assert tdiv(a, -1)[0] == -int(info.min)  # no wrap-around
    np.testing.assert_array_equal(tdiv(a, 3)[1:4], [-1, 0, 1])


def test_tdiv_min_value_of_each_dtype():
    # the extreme negative value must not overflow when made "truncating"
    for dtype in SIGNED_DTYPES:
        info = np.iinfo(dtype)
        a = np.array([info.min], dtype=dtype)
        assert tdiv(a, 2).tolist() == [int(info.min) // 2]  # exact: min is even
        assert tdiv(a, 3).tolist() == [-(-int(info.min) // 3)]
        assert tdiv(a, int(info.max)).tolist() == [-1]


def test_tdiv_divisor_larger_than_dtype_max():
    a = np.array([-128, -100, 0, 100, 127], dtype=np.int8)
    q = tdiv(a, 1000)
    assert q.dtype == np.int64
    np.testing.assert_array_equal(q, [0, 0, 0, 0, 0])
    q = tdiv(a, 128)  # 128 does not fit int8: -128 / 128 == -1 exactly
    assert q.dtype == np.int64
    np.testing.assert_array_equal(q, [-1, 0, 0, 0, 0])
    q = tdiv(a, -128)
    np.testing.assert_array_equal(q, [1, 0, 0, 0, 0])

    b = np.array([-(2**15), 2**15 - 1], dtype=np.int16)
    np.testing.assert_array_equal(tdiv(b, 40000), [0, 0])
    c = np.array([-(2**31), 2**31 - 1], dtype=np.int32)
    q = tdiv(c, 2**31)
    assert q.dtype == np.int64
    np.testing.assert_array_equal(q, [-1, 0])


def test_tdiv_by_zero_raises():
    with pytest.raises(ZeroDivisionError):
        tdiv(np.array([1, -1], dtype=np.int32), 0)
    with pytest.raises(ZeroDivisionError):
        tdiv(np.array([0], dtype=np.int8), 0)


def test_tdiv_broadcastable_array_divisor():
    # algorithm.md §1: "an integer divisor (scalar or broadcastable array, never 0)"
    a = np.array([[-7, 7], [-9, 9]], dtype=np.int32)
    d = np.array([4, -4], dtype=np.int32)
    # -7/4 -> -1, 7/-4 -> -1, -9/4 -> -2, 9/-4 -> -2
    np.testing.assert_array_equal(tdiv(a, d), [[-1, -1], [-2, -2]])


def test_to_int8_saturates_to_symmetric_range():
    a = np.array([-(2**40), -1000, -128, -127, -1, 0, 1, 127, 128, 1000, 2**40], dtype=np.int64)
    out = to_int8(a)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, [-127, -127, -127, -127, -1, 0, 1, 127, 127, 127, 127])
    assert INT8_MAX == 127
    # an int8 -128 is saturated to -127 as well
    np.testing.assert_array_equal(to_int8(np.array([-128, 127], dtype=np.int8)), [-127, 127])


def test_isqrt_is_floor_square_root():
    assert [isqrt(n) for n in (0, 1, 2, 3, 4, 8, 9, 783, 784, 785, 899, 900)] == \
        [0, 1, 1, 1, 2, 2, 3, 27, 28, 28, 29, 30]
    assert isqrt(10**30) == 10**15
    assert isqrt(10**30 - 1) == 10**15 - 1
    assert isqrt((2**53 + 1) ** 2 - 1) == 2**53  # beyond float64 precision
    assert isqrt(np.int64(784)) == 28
    assert isinstance(isqrt(np.int64(784)), int)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("d", [2, 3, 4, 7, 128, 255, 256, 1024])
def test_tdiv_of_unsigned_arrays_is_floor_division(dtype, d):
    a = np.linspace(0, np.iinfo(dtype).max, 1000).astype(dtype)
    q = tdiv(a, d)
    assert q.tolist() == [v // d for v in a.tolist()]
