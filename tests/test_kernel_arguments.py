"""The compiled kernels check their own arguments, whatever Python passes: each array's
dtype (by its buffer format), contiguity and writability, sizes without overflow, the
outlier indices the pair products follow, and the instruction set the pair products are
asked for (an unknown name: ValueError; one this CPU lacks: RuntimeError). Property-based:
hypothesis swaps one argument of a valid call for a wrong one; the kernel must raise, never
read or write out of bounds. The pair products are called on every ISA this CPU runs."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sknitro.nn import kernels

pytestmark = pytest.mark.skipif(kernels._compiled is None, reason="sknitro._fused is not built")
_fused = kernels._compiled
ISAS = ("avx2", "vnni")
PAIR_ISAS = [isa for isa in ISAS if isa in kernels.AVAILABLE]
PAIR_FUNCTIONS = ("units_product", "pairs_product", "units_sgd_update", "units_sgd_update_pairs")


def _pair_calls(isa):
    """The pair products' valid calls on ``isa`` (argument 0): name -> (function, args,
    {argument position: (dtype, written)}). Each takes int8 x (m, k) itself."""
    m, n, k = 3, 2, 4
    x = np.random.default_rng(0).integers(-9, 9, size=(m, k)).astype(np.int8)
    return {
        "units_product": ("units_product", [isa, x, np.ones((n, k), np.int32), m, n, k, 0, np.empty((m, n), np.int32)],
                          {1: (np.int8, False), 2: (np.int32, False), 7: (np.int32, True)}),
        "pairs_product": ("pairs_product", [isa, x, np.ones((n, k), np.int16), np.array([1, 5], np.int32),
                                            np.array([3, -2], np.int32), 2, m, n, k, 0, np.empty((m, n), np.int32)],
                          {1: (np.int8, False), 2: (np.int16, False), 3: (np.int32, False), 4: (np.int32, False),
                           10: (np.int32, True)}),
        # the split units' mirror (int32), then the pair form's (int16, with its outlier list)
        "units_sgd_update": ("units_sgd_update", [isa, np.ones((m, n), np.int32), x, np.zeros((n, k), np.int32),
                                                  np.empty((n, k), np.int32), m, n, k, 5, 0],
                             {1: (np.int32, False), 2: (np.int8, False), 3: (np.int32, True), 4: (np.int32, True)}),
        "units_sgd_update_pairs": ("units_sgd_update", [isa, np.ones((m, n), np.int32), x,
                                                        np.full((n, k), 2**16, np.int32), np.empty((n, k), np.int16),
                                                        m, n, k, 5, 0, np.empty(4, np.int32), np.empty(4, np.int32)],
                                   {1: (np.int32, False), 2: (np.int8, False), 3: (np.int32, True),
                                    4: (np.int16, True), 10: (np.int32, True), 11: (np.int32, True)}),
    }


# where each pair function takes x
X_POSITION = {"units_product": 1, "pairs_product": 1, "units_sgd_update": 2, "units_sgd_update_pairs": 2}


def _valid_calls():
    """name -> (function, args of a valid call, {argument position: (dtype, written)})."""
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
        "row_l1": ([np.ones((3, 4), np.int8), 4], {0: (np.int8, False)}),
        "split_units": ([np.arange(8, dtype=np.int32), np.empty(8, np.int32)],
                        {0: (np.int32, False), 1: (np.int32, True)}),
        "pair_form": ([np.arange(8, dtype=np.int32), 4, np.empty(8, np.int16), np.empty(4, np.int32),
                       np.empty(4, np.int32)],
                      {0: (np.int32, False), 2: (np.int16, True), 3: (np.int32, True), 4: (np.int32, True)}),
        # 2 maps of 5 x 4 x 3 by 2 x 2 windows: 2 x 2 x 2 x 3 pooled values
        "max_pool": ([np.ones(120, np.int8), 2, 5, 4, 3, 2, 2, np.empty(24, np.int8), np.empty(24, np.uint8)],
                     {0: (np.int8, False), 7: (np.int8, True), 8: (np.uint8, True)}),
        "max_unpool": ([np.ones(24, np.int32), np.zeros(24, np.uint8), 2, 5, 4, 3, 2, 2, np.zeros(120, np.int32)],
                       {0: (np.int32, False), 1: (np.uint8, False), 8: (np.int32, True)}),
        # the same maps, 3 x 3 windows, padding 1: 40 rows of 27 values
        "im2col": ([np.ones(120, np.int8), 2, 5, 4, 3, 3, 1, np.empty(1080, np.int8)],
                   {0: (np.int8, False), 7: (np.int8, True)}),
    }
    calls = {name: (name, args, arrays) for name, (args, arrays) in calls.items()}
    for isa in PAIR_ISAS:
        calls.update({f"{name}[{isa}]": call for name, call in _pair_calls(isa).items()})
    return calls


CALLS = _valid_calls()
OTHER_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64,
                np.bool_]


def _fresh(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def test_every_pair_isa_of_this_cpu_is_fuzzed():
    # the fuzzing below covers exactly the ISAs the kernels report for this CPU
    assert set(PAIR_ISAS) == set(_fused.pair_isas())
    assert {name.split("[")[1][:-1] for name in CALLS if "[" in name} == set(PAIR_ISAS)


@pytest.mark.parametrize("name", CALLS)
def test_the_valid_calls_run(name):
    function, args, _ = CALLS[name]
    getattr(_fused, function)(*_fresh(args))


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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_wrong_array_argument_raises(data):
    name = data.draw(st.sampled_from(sorted(CALLS)))
    function, args, arrays = CALLS[name]
    position = data.draw(st.sampled_from(sorted(arrays)))
    expected, written = arrays[position]
    how = data.draw(st.sampled_from(["dtype", "strided"] + (["read-only"] if written else [])))
    # (float64 is scale_to_int8's other type of z; an update's int32 and int16 mirrors are
    # both accepted by type, and refused when they do not match the outlier buffers)
    wrong = data.draw(st.sampled_from([d for d in OTHER_DTYPES if np.dtype(d) != np.dtype(expected)
                                       and not (name == "scale_to_int8" and position == 0 and d == np.float64)]))
    call = _fresh(args)
    call[position] = _broken(call[position], wrong, written, how)
    if how == "strided" and call[position].flags.c_contiguous:
        return  # a 1-element view is contiguous after all
    with pytest.raises((TypeError, ValueError)):
        getattr(_fused, function)(*call)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 40), cols=st.integers(-3, 12))
def test_sizes_that_do_not_fit_raise(size, cols):
    x = np.ones(size, np.int8)
    if cols >= 1 and size % cols == 0:
        assert _fused.row_l1(x, cols) == (cols if size else 0)  # no rows: 0
    else:
        with pytest.raises(ValueError, match="rows"):
            _fused.row_l1(x, cols)


@pytest.mark.parametrize("geometry", [(0, 5, 4, 3, 3, 1), (2, 5, 4, 0, 3, 1), (2, 5, 4, 3, 0, 0), (2, 5, 4, 3, 3, 3),
                                      (2, 5, 4, 3, 3, -1), (2, 5, 4, 3, 7, 1), (2, 5, 4, 3, 65, 40),
                                      (2**40, 2**40, 2**40, 3, 3, 1), (3, 5, 4, 3, 3, 1), (2, 5, 4, 3, 3, 0)])
def test_patches_that_do_not_fit_raise_value_error_and_write_nothing(geometry):
    # empty maps, no window, padding of a whole window or negative, windows past the padded
    # map, sizes that overflow, and geometries the buffers do not hold
    x, out = np.ones(120, np.int8), np.full(1080, 7, np.int8)
    with pytest.raises(ValueError):
        _fused.im2col(x, *geometry, out)
    assert (out == 7).all()


@pytest.mark.parametrize("geometry", [(0, 5, 4, 3, 2, 2), (2, 5, 4, 3, 6, 2), (2, 5, 4, 3, 2, 5), (2, 5, 4, 3, 0, 2),
                                      (2, 5, 4, 0, 2, 2), (2, 5, 4, 3, -1, 2), (1, 20, 20, 1, 17, 16),
                                      (2**40, 2**40, 2**40, 3, 2, 2), (3, 5, 4, 3, 2, 2), (2, 5, 4, 3, 1, 1)])
def test_a_pooling_that_does_not_fit_raises_value_error_and_writes_nothing(geometry):
    # empty maps, windows past a side or of more than 256 positions, sizes that overflow, and
    # geometries the buffers do not hold (3 maps; 1 x 1 windows: 120 pooled values)
    x, best, argmax = np.ones(120, np.int8), np.full(24, 7, np.int8), np.full(24, 7, np.uint8)
    delta, out = np.ones(24, np.int32), np.full(120, 7, np.int32)
    with pytest.raises(ValueError):
        _fused.max_pool(x, *geometry, best, argmax)
    with pytest.raises(ValueError):
        _fused.max_unpool(delta, argmax, *geometry, out)
    assert (best == 7).all() and (argmax == 7).all() and (out == 7).all()


@pytest.mark.parametrize("isa", PAIR_ISAS)
@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
@pytest.mark.parametrize("dtype", [np.int32, np.float64, np.int16, np.uint8, np.int64, np.float32, np.bool_])
def test_an_x_of_another_type_raises_type_error_and_writes_nothing(isa, name, dtype):
    # x is int8 in every pair function: another type is refused by its buffer format, even
    # one of exactly as many bytes (3 int32 span the 12 bytes of the int8 x (3, 4))
    function, args, arrays = _pair_calls(isa)[name]
    position = X_POSITION[name]
    assert arrays[position] == (np.int8, False)
    for wrong in (args[position].astype(dtype), np.ones(args[position].nbytes // np.dtype(dtype).itemsize, dtype)):
        call = _fresh(args)
        outputs = [call[at] for at, (_, written) in arrays.items() if written]
        for output in outputs:
            output.fill(7)
        call[position] = wrong
        with pytest.raises(TypeError, match="int8"):
            getattr(_fused, function)(*call)
        assert all((output == 7).all() for output in outputs)


@pytest.mark.parametrize("isa", PAIR_ISAS)
@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
@pytest.mark.parametrize("shape", [(3, 3), (3, 5), (2, 4), (4, 4), (11,), (13,), (0,), (6, 4)])
def test_an_x_of_another_size_raises_value_error_and_writes_nothing(isa, name, shape):
    # x must hold exactly m * k int8 values (its shape itself is not read: (2, 6) would do)
    function, args, arrays = _pair_calls(isa)[name]
    position = X_POSITION[name]
    call = _fresh(args)
    outputs = [call[at] for at, (_, written) in arrays.items() if written]
    for output in outputs:
        output.fill(7)
    call[position] = np.ones(shape, np.int8)
    with pytest.raises(ValueError, match="x: expected 12 items of 1 bytes"):
        getattr(_fused, function)(*call)
    assert all((output == 7).all() for output in outputs)
    call[position] = np.ones((2, 6), np.int8)  # the same 12 values: it runs
    getattr(_fused, function)(*call)


def _isa_param(isa):
    return pytest.param(isa, marks=pytest.mark.skipif(isa not in kernels.AVAILABLE, reason=f"this CPU has no {isa}"))


@pytest.mark.parametrize("isa", [_isa_param(isa) for isa in ISAS])
@pytest.mark.parametrize("index", [[10**9, 1], [-5, 1], [3, 3], [5, 1], [1, 8]])
def test_outlier_indices_outside_the_weights_or_unsorted_raise(isa, index):
    function, args, arrays = _pair_calls(isa)["pairs_product"]
    call = _fresh(args)
    assert arrays[3] == (np.int32, False) and call[3].size == call[5] == 2  # the outlier indices
    call[3] = np.array(index, np.int32)
    with pytest.raises(ValueError, match="outlier index"):
        getattr(_fused, function)(*call)


@pytest.mark.parametrize("isa", [_isa_param(isa) for isa in ISAS])
def test_huge_shapes_are_refused_before_any_arithmetic_overflows(isa):
    z = np.empty((3, 2), np.int32)
    with pytest.raises(ValueError, match="too large|expected"):
        _fused.units_product(isa, np.ones((3, 4), np.int8), np.ones((2, 4), np.int32), 2**62, 2**62, 4, 0, z)
    # w's shape fits: x's (2**62 rows of 4 int8) is refused before m * k is taken
    with pytest.raises(ValueError, match=r"x: shape \(\d+, 4\) is too large"):
        _fused.units_product(isa, np.ones((3, 4), np.int8), np.ones((2, 4), np.int32), 2**62, 2, 4, 0, z)
    with pytest.raises(ValueError, match=r"x: shape \(\d+, 4\) is too large"):
        _fused.pairs_product(isa, np.ones((3, 4), np.int8), np.ones((2, 4), np.int16), np.zeros(1, np.int32),
                             np.zeros(1, np.int32), 0, 2**62, 2, 4, 0, z)
    with pytest.raises(ValueError, match="too large|expected"):
        _fused.units_sgd_update(isa, np.ones((3, 2), np.int32), np.ones((3, 4), np.int8), np.zeros((2, 4), np.int32),
                                np.empty((2, 4), np.int32), 2**62, 2**62, 4, 5, 0)


# -- the instruction set ---------------------------------------------------------------------

def _with_isa(name, isa):
    """A valid call of ``name`` but for its ISA (any CPU: the name is checked first), and the
    arrays it would write."""
    function, args, arrays = _pair_calls("avx2")[name]
    call = _fresh(args)
    call[0] = isa
    return function, call, [call[position] for position, (_, written) in arrays.items() if written]


@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
@pytest.mark.parametrize("isa", ["", "AVX2", "Vnni", "avx512", "avx2 ", "sse2", "neon", "c", "numpy", "auto"])
def test_an_unknown_isa_raises_and_writes_nothing(name, isa):
    function, call, outputs = _with_isa(name, isa)
    for output in outputs:
        output.fill(7)
    with pytest.raises(ValueError, match="isa must be 'vnni' or 'avx2'"):
        getattr(_fused, function)(*call)
    assert all((output == 7).all() for output in outputs)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(PAIR_FUNCTIONS), isa=st.text(max_size=12).filter(lambda text: text not in ISAS))
def test_any_other_isa_string_raises_value_error(name, isa):
    # (an embedded NUL or a lone surrogate raises ValueError too, before the name is read)
    function, call, _ = _with_isa(name, isa)
    with pytest.raises(ValueError):
        getattr(_fused, function)(*call)


@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
@pytest.mark.parametrize("isa", [None, b"avx2", 2, ["vnni"]])
def test_an_isa_that_is_not_a_string_raises_type_error(name, isa):
    function, call, _ = _with_isa(name, isa)
    with pytest.raises(TypeError):
        getattr(_fused, function)(*call)


@pytest.mark.parametrize("isa", [pytest.param(isa, marks=pytest.mark.skipif(
    isa in kernels.AVAILABLE, reason=f"this CPU runs {isa}")) for isa in ISAS])
@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
def test_an_isa_this_cpu_lacks_raises_runtime_error(name, isa):
    function, call, _ = _with_isa(name, isa)
    with pytest.raises(RuntimeError, match="does not run"):
        getattr(_fused, function)(*call)


def test_scale_takes_z_by_its_type_not_its_length():
    # 6 float64 values span the bytes of 12 int32 ones: read as int32, they would be garbage
    with pytest.raises(ValueError, match="z: expected 12 items"):
        _fused.scale_to_int8(np.arange(6, dtype=np.float64), 3, np.empty(12, np.int8))
    out = np.empty(12, np.int8)
    _fused.scale_to_int8(np.arange(12, dtype=np.float64) * 3, 3, out)
    assert out.tolist() == list(range(12))
