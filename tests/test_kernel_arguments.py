"""The compiled kernels check their own arguments, whatever Python passes: each array's
dtype (by its buffer format), contiguity and writability, sizes without overflow, and the
outlier indices the VNNI product follows. Property-based: hypothesis swaps one argument of a
valid call for a wrong one; the kernel must raise, never read or write out of bounds."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sknitro.nn import fused

pytestmark = pytest.mark.skipif(not fused.AVAILABLE, reason="sknitro._fused is not built")
kernels = fused._kernels


def _valid_calls():
    """name -> (args of a valid call, {argument position: (dtype, written)})."""
    rng = np.random.default_rng(0)
    table = np.arange(256, dtype=np.int8)
    calls = {
        "scale_to_int8": ([np.arange(12, dtype=np.int32), 3, np.empty(12, np.int8), table, np.empty(12, np.int8)],
                          {0: (np.int32, False), 2: (np.int8, True), 3: (np.int8, False), 4: (np.int8, True)}),
        "activation_backward": ([np.arange(12, dtype=np.int32), np.zeros(12, np.int8), np.ones(256, np.int32), 1,
                                 np.empty(12, np.int32), 4],
                                {0: (np.int32, False), 1: (np.int8, False), 2: (np.int32, False),
                                 4: (np.int32, True)}),
        "sgd_update": ([np.zeros(12, np.int32), np.ones(12, np.float64), 2, 0, np.empty(12, np.float64)],
                       {0: (np.int32, True), 1: (np.float64, False), 4: (np.float64, True)}),
        "head_step": ([np.ones((4, 6), np.int8), np.ones((3, 6), np.int32), np.zeros((4, 3), np.int8), 4, 60, 7, 0,
                       np.empty((4, 3), np.int8), np.empty((4, 6), np.int32)],
                      {0: (np.int8, False), 1: (np.int32, True), 2: (np.int8, False), 7: (np.int8, True),
                       8: (np.int32, True)}),
        "lookup_uint8": ([table, np.arange(10, dtype=np.uint8), np.empty(10, np.int8)],
                         {0: (np.int8, False), 1: (np.uint8, False), 2: (np.int8, True)}),
        "input_units": ([np.ones((3, 4), np.int8), 4, np.empty((3, 4), np.int32), np.empty((3, 4), np.int16)],
                        {0: (np.int8, False), 2: (np.int32, True), 3: (np.int16, True)}),
        "split_units": ([np.arange(8, dtype=np.int32), np.empty(8, np.int32)],
                        {0: (np.int32, False), 1: (np.int32, True)}),
        "pair_form": ([np.arange(8, dtype=np.int32), 4, np.empty(8, np.int16), np.empty(4, np.int32),
                       np.empty(4, np.int32)],
                      {0: (np.int32, False), 2: (np.int16, True), 3: (np.int32, True), 4: (np.int32, True)}),
    }
    if fused.VNNI:
        m, n, k = 3, 2, 4
        x = rng.integers(-9, 9, size=(m, k)).astype(np.int8)
        calls["units_product"] = ([np.ones((m, k), np.int32), np.ones((n, k), np.int32), m, n, k, 0,
                                   np.empty((m, n), np.int32)],
                                  {0: (np.int32, False), 1: (np.int32, False), 6: (np.int32, True)})
        calls["pairs_product"] = ([x.astype(np.int16), np.ones((n, k), np.int16), x, np.array([1, 5], np.int32),
                                   np.array([3, -2], np.int32), 2, m, n, k, 0, np.empty((m, n), np.int32)],
                                  {0: (np.int16, False), 1: (np.int16, False), 2: (np.int8, False),
                                   3: (np.int32, False), 4: (np.int32, False), 10: (np.int32, True)})
        calls["units_sgd_update"] = ([np.ones((m, n), np.int32), np.ones((m, k), np.int32), np.zeros((n, k), np.int32),
                                      np.empty((n, k), np.int32), m, n, k, 5, 0],
                                     {0: (np.int32, False), 1: (np.int32, False), 2: (np.int32, True),
                                      3: (np.int32, True)})
    return calls


CALLS = _valid_calls()
OTHER_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64,
                np.bool_]


@pytest.mark.parametrize("name", CALLS)
def test_the_valid_calls_run(name):
    args, _ = CALLS[name]
    getattr(kernels, name)(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])


def _broken(array, dtype, written, how):
    """``array`` made wrong: another dtype, a strided view, or read-only where written."""
    if how == "dtype":
        return array.astype(dtype)
    if how == "strided":
        wide = np.zeros((2,) + array.shape, dtype=array.dtype)
        return wide[::2].reshape(-1)[:array.size] if array.ndim == 1 else np.repeat(array, 2, axis=-1)[..., ::2]
    frozen = array.copy()
    frozen.setflags(write=False)
    return frozen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_wrong_array_argument_raises(data):
    name = data.draw(st.sampled_from(sorted(CALLS)))
    args, arrays = CALLS[name]
    position = data.draw(st.sampled_from(sorted(arrays)))
    expected, written = arrays[position]
    how = data.draw(st.sampled_from(["dtype", "strided"] + (["read-only"] if written else [])))
    wrong = data.draw(st.sampled_from([d for d in OTHER_DTYPES if np.dtype(d) != np.dtype(expected)
                                       and not (name == "scale_to_int8" and position == 0 and d == np.float64)
                                       and not (name == "units_sgd_update" and position == 3 and d == np.int16)]))
    call = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    call[position] = _broken(call[position], wrong, written, how)
    if how == "strided" and call[position].flags.c_contiguous:
        return  # a 1-element view is contiguous after all
    with pytest.raises((TypeError, ValueError)):
        getattr(kernels, name)(*call)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 40), cols=st.integers(-3, 12))
def test_sizes_that_do_not_fit_raise(size, cols):
    x, units = np.ones(size, np.int8), np.empty(size, np.int32)
    if cols >= 1 and size % cols == 0 and size > 0:
        assert kernels.input_units(x, cols, units) == (cols if size else 0)
    else:
        with pytest.raises(ValueError):
            kernels.input_units(x, cols, units)


@pytest.mark.skipif(not fused.VNNI, reason="the VNNI products need AVX-512 VNNI")
@pytest.mark.parametrize("index", [[10**9, 1], [-5, 1], [3, 3], [5, 1], [1, 8]])
def test_outlier_indices_outside_the_weights_or_unsorted_raise(index):
    args, _ = CALLS["pairs_product"]
    call = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    call[3] = np.array(index, np.int32)
    with pytest.raises(ValueError, match="outlier index"):
        kernels.pairs_product(*call)


@pytest.mark.skipif(not fused.VNNI, reason="the VNNI products need AVX-512 VNNI")
def test_huge_shapes_are_refused_before_any_arithmetic_overflows():
    z = np.empty((3, 2), np.int32)
    with pytest.raises(ValueError, match="too large|expected"):
        kernels.units_product(np.ones((3, 4), np.int32), np.ones((2, 4), np.int32), 2**62, 2**62, 4, 0, z)


def test_scale_takes_z_by_its_type_not_its_length():
    # 6 float64 values span the bytes of 12 int32 ones: read as int32, they would be garbage
    with pytest.raises(ValueError, match="z: expected 12 items"):
        kernels.scale_to_int8(np.arange(6, dtype=np.float64), 3, np.empty(12, np.int8))
    out = np.empty(12, np.int8)
    kernels.scale_to_int8(np.arange(12, dtype=np.float64) * 3, 3, out)
    assert out.tolist() == list(range(12))
