"""The compiled kernels check their own arguments, whatever Python passes: each array's
dtype, number of dimensions, contiguity and writability (typed memoryviews: ValueError; an
object that is no buffer at all, such as None or a list: TypeError), that the shapes of the
arrays agree with each other (the sizes are read from them), the geometries of the pooling
and the patches, the outlier indices the pair products follow, and the instruction set the
pair products are asked for (an unknown name: ValueError; one this CPU lacks: RuntimeError).
A call that raises writes nothing. Property-based and exhaustive: one argument of a valid
call is swapped for a wrong one; the kernel must raise, never read or write out of bounds.
The pair products are called on every ISA this CPU runs."""

import re
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sknitro.nn import kernels

pytestmark = pytest.mark.skipif(kernels._compiled is None, reason="sknitro._fused is not built")
_fused = kernels._compiled
ISAS = ("avx2", "vnni")
PAIR_ISAS = [isa for isa in ISAS if isa in kernels.AVAILABLE]
PAIR_FUNCTIONS = ("units_product", "pairs_product", "pairs_scaled_product", "units_sgd_update",
                  "units_sgd_update_pairs", "narrow_scaled_product")


class Arg(NamedTuple):
    """An array argument of a kernel: its name, dtype, whether the kernel writes it, and
    whether None stands for it (the call then runs without it)."""

    name: str
    dtype: type
    written: bool
    optional: bool = False


class Call(NamedTuple):
    function: str
    args: list
    arrays: dict  # argument position -> Arg
    names: tuple  # every argument's name, in order (the shape errors start with one)


def _pair_calls(isa):
    """The pair products' valid calls on ``isa`` (argument 0): name -> Call. Each takes int8
    x (m, k) itself."""
    m, n, k = 3, 2, 4
    x = np.random.default_rng(0).integers(-9, 9, size=(m, k)).astype(np.int8)
    update_names = ("isa", "delta", "x", "w", "mirror", "divisor", "decay_inv", "index", "residual")
    return {
        "units_product": Call("units_product", [isa, x, np.ones((n, k), np.int32), 0, np.empty((m, n), np.int32)],
                              {1: Arg("x", np.int8, False), 2: Arg("w_units", np.int32, False),
                               4: Arg("z", np.int32, True)},
                              ("isa", "x", "w_units", "chunk", "z")),
        "narrow_scaled_product": Call("narrow_scaled_product",
                                      [isa, x, np.ones((n, k), np.int32), 60, np.empty((m, n), np.int8),
                                       np.arange(-128, 128).astype(np.int8), np.empty((m, n), np.int8)],
                                      {1: Arg("x", np.int8, False), 2: Arg("w_units", np.int32, False),
                                       4: Arg("scaled", np.int8, True), 5: Arg("table", np.int8, False),
                                       6: Arg("activated", np.int8, True)},
                                      ("isa", "x", "w_units", "scale", "scaled", "table", "activated")),
        "pairs_product": Call("pairs_product", [isa, x, np.ones((n, k), np.int16), np.array([1, 5], np.int32),
                                                np.array([3, -2], np.int32), 2, 0, np.empty((m, n), np.int32)],
                              {1: Arg("x", np.int8, False), 2: Arg("w_pairs", np.int16, False),
                               3: Arg("index", np.int32, False), 4: Arg("residual", np.int32, False),
                               7: Arg("z", np.int32, True)},
                              ("isa", "x", "w_pairs", "index", "residual", "count", "chunk", "z")),
        "pairs_scaled_product": Call("pairs_scaled_product",
                                     [isa, x, np.ones((n, k), np.int16), np.array([1, 5], np.int32),
                                      np.array([3, -2], np.int32), 2, 0, 60, np.empty((m, n), np.int8),
                                      np.arange(-128, 128).astype(np.int8), np.empty((m, n), np.int8)],
                                     {1: Arg("x", np.int8, False), 2: Arg("w_pairs", np.int16, False),
                                      3: Arg("index", np.int32, False), 4: Arg("residual", np.int32, False),
                                      8: Arg("scaled", np.int8, True), 9: Arg("table", np.int8, False),
                                      10: Arg("activated", np.int8, True)},
                                     ("isa", "x", "w_pairs", "index", "residual", "count", "chunk", "scale",
                                      "scaled", "table", "activated")),
        # the split units' mirror (int32), then the pair form's (int16, with its outlier list)
        "units_sgd_update": Call("units_sgd_update", [isa, np.ones((m, n), np.int32), x, np.zeros((n, k), np.int32),
                                                      np.empty((n, k), np.int32), 5, 0],
                                 {1: Arg("delta", np.int32, False), 2: Arg("x", np.int8, False),
                                  3: Arg("w", np.int32, True), 4: Arg("mirror", np.int32, True)},
                                 update_names),
        "units_sgd_update_pairs": Call("units_sgd_update", [isa, np.ones((m, n), np.int32), x,
                                                            np.full((n, k), 2**16, np.int32),
                                                            np.empty((n, k), np.int16), 5, 0, np.empty(4, np.int32),
                                                            np.empty(4, np.int32)],
                                       {1: Arg("delta", np.int32, False), 2: Arg("x", np.int8, False),
                                        3: Arg("w", np.int32, True), 4: Arg("mirror", np.int16, True),
                                        7: Arg("index", np.int32, True), 8: Arg("residual", np.int32, True)},
                                       update_names),
    }


# where each pair function takes x
X_POSITION = {"units_product": 1, "pairs_product": 1, "pairs_scaled_product": 1, "units_sgd_update": 2,
              "units_sgd_update_pairs": 2, "narrow_scaled_product": 1}


def _valid_calls():
    """name -> Call of a valid call."""
    table = np.arange(256, dtype=np.int8)
    maps = np.random.default_rng(1).integers(-128, 128, (2, 5, 4, 3)).astype(np.int8)
    calls = {
        "scale_to_int8": Call("scale_to_int8", [np.arange(12, dtype=np.int32), 3, np.empty(12, np.int8), table,
                                                np.empty(12, np.int8)],
                              {0: Arg("z", np.int32, False), 2: Arg("out", np.int8, True),
                               3: Arg("table", np.int8, False), 4: Arg("activated", np.int8, True)},
                              ("z", "scale", "out", "table", "activated")),
        "activation_backward": Call("activation_backward",
                                    [np.arange(12, dtype=np.int32).reshape(3, 4), np.zeros((3, 4), np.int8),
                                     np.ones(256, np.int32), 1, np.empty((3, 4), np.int32)],
                                    {0: Arg("g", np.int32, False), 1: Arg("pre", np.int8, False),
                                     2: Arg("table", np.int32, False), 4: Arg("out", np.int32, True)},
                                    ("g", "pre", "table", "divisor", "out")),
        "sgd_update": Call("sgd_update", [np.zeros((3, 4), np.int32), np.ones((3, 4), np.float64), 2, 0,
                                          np.empty((3, 4), np.float64)],
                           {0: Arg("w", np.int32, True), 1: Arg("g", np.float64, False),
                            4: Arg("mirror", np.float64, True, optional=True)},
                           ("w", "g", "divisor", "decay_inv", "mirror")),
        "head_step": Call("head_step", [np.ones((4, 6), np.int8), np.ones((3, 6), np.int32), np.zeros((4, 3), np.int8),
                                        60, 7, 0, np.empty((4, 3), np.int8), np.empty((4, 6), np.int32)],
                          {0: Arg("x", np.int8, False), 1: Arg("w", np.int32, True), 2: Arg("target", np.int8, False),
                           6: Arg("yhat", np.int8, True), 7: Arg("input_grad", np.int32, True, optional=True)},
                          ("x", "w", "target", "scale", "divisor", "decay_inv", "yhat", "input_grad")),
        "lookup_uint8": Call("lookup_uint8", [table, np.arange(10, dtype=np.uint8), np.empty(10, np.int8)],
                             {0: Arg("table", np.int8, False), 1: Arg("x", np.uint8, False),
                              2: Arg("out", np.int8, True)},
                             ("table", "x", "out")),
        "row_l1": Call("row_l1", [np.ones((3, 4), np.int8)], {0: Arg("x", np.int8, False)}, ("x",)),
        "split_units": Call("split_units", [np.arange(8, dtype=np.int32).reshape(2, 4), np.empty((2, 4), np.int32)],
                            {0: Arg("a", np.int32, False), 1: Arg("units", np.int32, True)},
                            ("a", "units")),
        "pair_form": Call("pair_form", [np.arange(8, dtype=np.int32).reshape(2, 4), np.empty((2, 4), np.int16),
                                        np.empty(4, np.int32), np.empty(4, np.int32)],
                          {0: Arg("a", np.int32, False), 1: Arg("pairs", np.int16, True),
                           2: Arg("index", np.int32, True), 3: Arg("residual", np.int32, True)},
                          ("a", "pairs", "index", "residual")),
        # 2 maps of 5 x 4 x 3 by 2 x 2 windows: 2 x 2 x 2 x 3 pooled values
        "max_pool": Call("max_pool", [maps, 2, 2, np.empty((2, 2, 2, 3), np.int8), np.empty((2, 2, 2, 3), np.uint8)],
                         {0: Arg("x", np.int8, False), 3: Arg("best", np.int8, True),
                          4: Arg("argmax", np.uint8, True)},
                         ("x", "kh", "kw", "best", "argmax")),
        "max_unpool": Call("max_unpool", [np.ones((2, 2, 2, 3), np.int32), np.zeros((2, 2, 2, 3), np.uint8), 2, 2,
                                          np.zeros((2, 5, 4, 3), np.int32)],
                           {0: Arg("delta", np.int32, False), 1: Arg("argmax", np.uint8, False),
                            4: Arg("out", np.int32, True)},
                           ("delta", "argmax", "kh", "kw", "out")),
        # 2 maps of 3 positions x 4 channels; the mask in the maps' logical order (channels first)
        "dropout_apply": Call("dropout_apply", [np.ones((2, 3, 4), np.int8), np.ones((2, 4, 3), np.uint8), 1111,
                                                np.empty((2, 3, 4), np.int8), np.empty((2, 3, 4), np.int16)],
                              {0: Arg("x", np.int8, False), 1: Arg("mask", np.uint8, False),
                               3: Arg("out8", np.int8, True), 4: Arg("out16", np.int16, True)},
                              ("x", "mask", "rescale", "out8", "out16")),
        "dropout_mask": Call("dropout_mask", [np.random.default_rng(0).bit_generator, np.empty(10, np.uint8), 90],
                             {1: Arg("mask", np.uint8, True)}, ("bit_generator", "mask", "keep_percent")),
        # the same maps, 3 x 3 windows, padding 1: 2 x 5 x 4 = 40 rows of 27 values
        "im2col": Call("im2col", [maps, 3, 1, np.empty((40, 27), np.int8)],
                       {0: Arg("x", np.int8, False), 3: Arg("out", np.int8, True)},
                       ("x", "k", "pad", "out")),
    }
    for isa in PAIR_ISAS:
        calls.update({f"{name}[{isa}]": call for name, call in _pair_calls(isa).items()})
    return calls


CALLS = _valid_calls()
OTHER_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64,
                np.bool_]
# the functions whose every size is tied to another argument's (the pooling and the patches
# also take a geometry: their own tests below)
TIED = [name for name, call in CALLS.items()
        if call.function not in ("row_l1", "max_pool", "max_unpool", "im2col", "dropout_mask")]


def _fresh(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def _prepared(call):
    """A fresh copy of ``call``'s arguments with every array it writes set to 7, and a
    snapshot of those arrays (a call that raises must leave them as they are)."""
    args = _fresh(call.args)
    for position, arg in call.arrays.items():
        if arg.written:
            args[position].fill(7)
    return args


def _snapshot(args, call):
    return {position: args[position].copy() for position, arg in call.arrays.items()
            if arg.written and isinstance(args[position], np.ndarray)}


def _assert_unwritten(args, snapshot):
    for position, before in snapshot.items():
        assert args[position].dtype == before.dtype and np.array_equal(args[position], before), \
            f"argument {position} was written by a call that raised"


def _argument_names(call):
    """A pattern for a message that starts with one of ``call``'s argument names."""
    return "^(" + "|".join(call.names) + ")"


def _accepts(call, position, dtype):
    """Whether ``dtype`` is one the argument takes (float64 is scale_to_int8's other type of z,
    bool the other type of a dropout mask; an update's int32 and int16 mirrors are both
    accepted by type, and refused below when they do not match the outlier buffers)."""
    return np.dtype(dtype) == np.dtype(call.arrays[position].dtype) or (
        call.function == "scale_to_int8" and position == 0 and np.dtype(dtype) == np.float64) or (
        call.function in ("dropout_mask", "dropout_apply") and call.arrays[position].name == "mask"
        and np.dtype(dtype) == np.bool_)  # a mask of 0 and 1


def test_every_pair_isa_of_this_cpu_is_fuzzed():
    # the fuzzing below covers exactly the ISAs the kernels report for this CPU
    assert set(PAIR_ISAS) == set(_fused.pair_isas())
    assert {name.split("[")[1][:-1] for name in CALLS if "[" in name} == set(PAIR_ISAS)


@pytest.mark.parametrize("name", CALLS)
def test_the_valid_calls_run(name):
    call = CALLS[name]
    getattr(_fused, call.function)(*_fresh(call.args))


OPTIONAL = [(name, position) for name, call in CALLS.items() for position, arg in call.arrays.items() if arg.optional]


@pytest.mark.parametrize("name, position", OPTIONAL)
def test_an_optional_array_may_be_none(name, position):
    # the call runs without it, and the rest of its results are the same as with it
    call = CALLS[name]
    given, without = _prepared(call), _prepared(call)
    without[position] = None
    assert getattr(_fused, call.function)(*without) == getattr(_fused, call.function)(*given)
    for at, arg in call.arrays.items():
        if arg.written and at != position:
            np.testing.assert_array_equal(without[at], given[at])


def test_scale_to_int8_takes_table_and_activated_together():
    z, scale, out, table, activated = _fresh(CALLS["scale_to_int8"].args)
    for args in ((z, scale, out, None, None), (z, scale, out)):
        out.fill(7)
        _fused.scale_to_int8(*args)
        assert out.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    out.fill(7)
    activated.fill(7)
    for args in ((z, scale, out, table, None), (z, scale, out, None, activated), (z, scale, out, table)):
        with pytest.raises(ValueError, match="together"):
            _fused.scale_to_int8(*args)
    assert (out == 7).all() and (activated == 7).all()


# -- a wrong array ----------------------------------------------------------------------------

def _strided(array):
    """``array``'s values in a view that is not C-contiguous, of the same shape (and so the
    same number of dimensions): every other item of a wider array."""
    wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype=array.dtype)
    view = wide[..., ::2]
    view[...] = array
    return view


def _broken(array, how, dtype=None):
    """``array`` made wrong: another dtype, a strided view, another number of dimensions,
    read-only, None, or a list of its values."""
    if how == "dtype":
        return array.astype(dtype)
    if how == "strided":
        return _strided(array)
    if how == "fewer-dims":
        return array.reshape(-1) if array.ndim > 1 else array[0, ...]  # (a 0-d array)
    if how == "more-dims":
        return array[..., np.newaxis]
    if how == "read-only":
        frozen = array.copy()
        frozen.setflags(write=False)
        return frozen
    if how == "none":
        return None
    assert how == "list"
    return array.tolist()


def _hows(arg):
    return ["strided", "fewer-dims", "more-dims", "list"] + (["read-only"] if arg.written else []) + (
        [] if arg.optional else ["none"])


WRONG_DTYPES = [pytest.param(name, position, dtype, id=f"{name}-{position}-{np.dtype(dtype).name}")
                for name, call in CALLS.items() for position in call.arrays for dtype in OTHER_DTYPES
                if not _accepts(call, position, dtype)]
WRONG_ARRAYS = [pytest.param(name, position, how, id=f"{name}-{position}-{how}")
                for name, call in CALLS.items() for position, arg in call.arrays.items() for how in _hows(arg)]
# what Cython says of each
MESSAGES = {"strided": "contiguous", "fewer-dims": "dimensions", "more-dims": "dimensions",
            "read-only": "read-only"}
# the arguments of either of two dtypes (scale_to_int8's z: int32 or float64; an update's
# mirror: int32 split units or int16 pairs), which the kernel may tell apart before Cython
# checks the buffer (a fused type: TypeError "No matching signature found")
EITHER = {("scale_to_int8", "z"), ("units_sgd_update", "mirror")}


@pytest.mark.parametrize("name, position, dtype", WRONG_DTYPES)
def test_every_array_argument_refuses_every_other_dtype(name, position, dtype):
    # by its buffer format, whatever its size: bool for uint8, uint8 for int8, int32 for float32
    call = CALLS[name]
    args = _prepared(call)
    args[position] = _broken(args[position], "dtype", dtype)
    snapshot = _snapshot(args, call)
    if (call.function, call.arrays[position].name) in EITHER:
        with pytest.raises((TypeError, ValueError)):
            getattr(_fused, call.function)(*args)
    else:
        with pytest.raises(ValueError, match="dtype mismatch"):
            getattr(_fused, call.function)(*args)
    _assert_unwritten(args, snapshot)


@pytest.mark.parametrize("name, position, how", WRONG_ARRAYS)
def test_every_array_argument_refuses_a_wrong_array(name, position, how):
    # strided, of another number of dimensions, read-only where written (ValueError), None
    # where the array is required, or a list (TypeError, or ValueError)
    call = CALLS[name]
    args = _prepared(call)
    args[position] = _broken(args[position], how)
    snapshot = _snapshot(args, call)
    if how == "strided":
        assert not args[position].flags.c_contiguous and args[position].ndim == call.args[position].ndim
    if how in MESSAGES and (call.function, call.arrays[position].name) not in EITHER:
        with pytest.raises(ValueError, match=MESSAGES[how]):
            getattr(_fused, call.function)(*args)
    else:
        with pytest.raises((TypeError, ValueError)):
            getattr(_fused, call.function)(*args)
    _assert_unwritten(args, snapshot)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_wrong_array_argument_raises(data):
    name = data.draw(st.sampled_from(sorted(CALLS)))
    call = CALLS[name]
    position = data.draw(st.sampled_from(sorted(call.arrays)))
    arg = call.arrays[position]
    how = data.draw(st.sampled_from(["dtype"] + _hows(arg)))
    wrong = data.draw(st.sampled_from([d for d in OTHER_DTYPES if not _accepts(call, position, d)]))
    args = _prepared(call)
    args[position] = _broken(args[position], how, wrong)
    snapshot = _snapshot(args, call)
    if how == "strided":
        assert not args[position].flags.c_contiguous
    with pytest.raises((TypeError, ValueError)):
        getattr(_fused, call.function)(*args)
    _assert_unwritten(args, snapshot)


# -- shapes ----------------------------------------------------------------------------------

def _reshaped(array, axis, change):
    """An array of ``array``'s dtype whose ``axis`` is ``change`` longer, holding ``array``'s
    values where they overlap (and zeros past them)."""
    shape = list(array.shape)
    shape[axis] += change
    other = np.zeros(shape, dtype=array.dtype)
    overlap = tuple(slice(0, min(a, b)) for a, b in zip(array.shape, shape))
    other[overlap] = array[overlap]
    return other


SHAPE_CHANGES = [pytest.param(name, position, axis, change, id=f"{name}-{position}-axis{axis}{change:+d}")
                 for name in TIED for position in CALLS[name].arrays
                 for axis in range(CALLS[name].args[position].ndim) for change in (-1, 1)
                 if CALLS[name].args[position].shape[axis] + change >= 1]


@pytest.mark.parametrize("name, position, axis, change", SHAPE_CHANGES)
def test_shapes_that_disagree_raise_value_error_and_write_nothing(name, position, axis, change):
    # the sizes are read from the arrays: one array a row or a column short or long does not
    # agree with the others, and the error names an argument ("z: expected shape (3, 2), got
    # (3, 3)"); the pair products may also refuse an odd width or a count past the list
    call = CALLS[name]
    args = _prepared(call)
    args[position] = _reshaped(args[position], axis, change)
    snapshot = _snapshot(args, call)
    pattern = _argument_names(call) + r"\b"
    if call.function == "pairs_product":
        pattern += "|even|count must be in"
    with pytest.raises(ValueError, match=pattern):
        getattr(_fused, call.function)(*args)
    _assert_unwritten(args, snapshot)


def test_a_shape_error_names_the_argument_and_both_shapes():
    # the form of the message, on the arrays the other's shape is read from
    for isa in PAIR_ISAS:
        call = _pair_calls(isa)["units_product"]
        args = _prepared(call)
        args[4] = np.full((3, 3), 7, np.int32)
        with pytest.raises(ValueError, match=re.escape("z: expected shape (3, 2), got (3, 3)")):
            _fused.units_product(*args)
        assert (args[4] == 7).all()
    with pytest.raises(ValueError, match=re.escape("table: expected shape (256,), got (255,)")):
        _fused.lookup_uint8(np.zeros(255, np.int8), np.zeros(4, np.uint8), np.zeros(4, np.int8))


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(0, 40), cols=st.integers(0, 12), value=st.integers(-128, 127))
def test_row_l1_reads_rows_from_the_shape(rows, cols, value):
    x = np.full((rows, cols), value, np.int8)
    if cols == 0 and rows > 0:
        # rows of nothing: no norm past 0, or refused as empty
        try:
            assert _fused.row_l1(x) == 0
        except ValueError as error:
            assert "empty" in str(error)
        return
    assert _fused.row_l1(x) == (abs(value) * cols if rows else 0)  # no rows: 0
    # the same values as a flat buffer or a stack of matrices: refused, not reinterpreted
    for other in (x.reshape(-1), x.reshape(1, rows, cols)):
        with pytest.raises(ValueError, match="dimensions"):
            _fused.row_l1(other)


def _patches(shape, k, pad):
    """The shape of im2col's out for maps of ``shape`` (n, h, w, c), clipped at 0."""
    n, h, w, c = shape
    ho, wo = max(0, h + 2 * pad - k + 1), max(0, w + 2 * pad - k + 1)
    return n * ho * wo, max(0, k) ** 2 * c


PATCH_CASES = [
    # empty maps, no window, padding of a whole window or negative, windows past the padded
    # map or of more than 64 x 64, each with an out of the shape that geometry would give
    ((0, 5, 4, 3), 3, 1, None), ((2, 5, 4, 0), 3, 1, None), ((2, 0, 4, 3), 1, 0, None), ((2, 5, 4, 3), 0, 0, None),
    ((2, 5, 4, 3), 3, 3, None), ((2, 5, 4, 3), 3, -1, None), ((2, 5, 4, 3), 7, 1, None),
    ((2, 5, 4, 3), 65, 40, None),
    # shapes that disagree: out for 2 maps, out of padding 1 without padding, a row or a
    # column too many or too few, and arrays of the wrong number of dimensions
    ((3, 5, 4, 3), 3, 1, (40, 27)), ((2, 5, 4, 4), 3, 1, (40, 27)), ((2, 5, 4, 3), 3, 0, (40, 27)),
    ((2, 5, 4, 3), 3, 1, (41, 27)), ((2, 5, 4, 3), 3, 1, (39, 27)), ((2, 5, 4, 3), 3, 1, (40, 28)),
    ((2, 5, 4, 3), 3, 1, (40, 26)), ((2, 5, 4, 3), 3, 1, (1080,)), ((2, 5, 4, 3), 3, 1, (40, 27, 1)),
    ((10, 4, 3), 3, 1, (40, 27)), ((120,), 3, 1, (40, 27)),
]


@pytest.mark.parametrize("x_shape, k, pad, out_shape", PATCH_CASES)
def test_patches_that_do_not_fit_raise_value_error_and_write_nothing(x_shape, k, pad, out_shape):
    x = np.ones(x_shape, np.int8)
    out = np.full(out_shape or _patches(x_shape, k, pad), 7, np.int8)
    with pytest.raises(ValueError):
        _fused.im2col(x, k, pad, out)
    assert (out == 7).all()
    if out_shape is not None and len(x_shape) == 4 and len(out_shape) == 2 and 0 <= pad < k:
        # the same maps and window with the out their geometry gives: it runs
        out = np.full(_patches(x_shape, k, pad), 7, np.int8)
        _fused.im2col(x, k, pad, out)
        assert out.size and (out == 1).any()


def _pooled(shape, kh, kw):
    """The shape of max_pool's best and argmax for maps of ``shape`` (n, h, w, c)."""
    n, h, w, c = shape
    return n, h // kh if kh > 0 else 1, w // kw if kw > 0 else 1, c


POOLING_CASES = [
    # empty maps, windows past a side or of more than 256 positions, no window, with pooled
    # arrays of the shape that geometry would give
    ((0, 5, 4, 3), 2, 2, None, None), ((2, 5, 4, 3), 6, 2, None, None), ((2, 5, 4, 3), 2, 5, None, None),
    ((2, 5, 4, 3), 0, 2, None, None), ((2, 5, 4, 3), 2, 0, None, None), ((2, 5, 4, 0), 2, 2, None, None),
    ((2, 5, 4, 3), -1, 2, None, None), ((1, 20, 20, 1), 17, 16, None, None),
    # shapes that disagree: maps of 3 (pooled 2), of 4 channels, 1 x 1 windows (120 pooled
    # values), a map of 6 rows (3 pooled), an argmax unlike best, and wrong dimensions
    ((3, 5, 4, 3), 2, 2, (2, 2, 2, 3), None), ((2, 5, 4, 4), 2, 2, (2, 2, 2, 3), None),
    ((2, 5, 4, 3), 1, 1, (2, 2, 2, 3), None), ((2, 6, 4, 3), 2, 2, (2, 2, 2, 3), None),
    ((2, 5, 4, 3), 2, 2, (2, 2, 2, 3), (2, 2, 2, 2)), ((2, 5, 4, 3), 2, 2, (2, 2, 2, 3), (2, 2, 3, 3)),
    ((2, 5, 4, 3), 2, 2, (2, 2, 2, 3), (24,)), ((2, 5, 4, 3), 2, 2, (2, 2, 6), None),
    ((10, 4, 3), 2, 2, (2, 2, 2, 3), None), ((120,), 2, 2, (2, 2, 2, 3), None),
]


@pytest.mark.parametrize("x_shape, kh, kw, pooled_shape, argmax_shape", POOLING_CASES)
def test_a_pooling_that_does_not_fit_raises_value_error_and_writes_nothing(x_shape, kh, kw, pooled_shape,
                                                                           argmax_shape):
    pooled_shape = pooled_shape or _pooled(x_shape, kh, kw)
    argmax_shape = argmax_shape or pooled_shape
    x, best, argmax = np.ones(x_shape, np.int8), np.full(pooled_shape, 7, np.int8), np.full(argmax_shape, 7, np.uint8)
    # max_unpool: out has the maps' shape, delta and argmax the pooled one
    delta, positions, out = np.ones(pooled_shape, np.int32), np.zeros(argmax_shape, np.uint8), np.full(x_shape, 7,
                                                                                                       np.int32)
    with pytest.raises(ValueError):
        _fused.max_pool(x, kh, kw, best, argmax)
    with pytest.raises(ValueError):
        _fused.max_unpool(delta, positions, kh, kw, out)
    assert (best == 7).all() and (argmax == 7).all() and (out == 7).all()


@pytest.mark.parametrize("kh, kw, ph, pw", [(2, 2, 2, 0), (2, 2, 0, 2), (2, 2, -1, 0), (2, 2, 0, -1), (3, 3, 3, 1),
                                            (2, 9, 0, 2), (10, 2, 2, 0)])
def test_padding_that_does_not_fit_raises_value_error_and_writes_nothing(kh, kw, ph, pw):
    # padding of a whole window or negative, and windows past the padded maps (5 x 4)
    x, out = np.ones((2, 5, 4, 3), np.int8), np.full((2, 5, 4, 3), 7, np.int32)
    best, argmax = np.full((2, 1, 1, 3), 7, np.int8), np.full((2, 1, 1, 3), 7, np.uint8)
    with pytest.raises(ValueError, match="padding"):
        _fused.max_pool(x, kh, kw, best, argmax, ph, pw)
    with pytest.raises(ValueError, match="padding"):
        _fused.max_unpool(np.ones((2, 1, 1, 3), np.int32), argmax, kh, kw, out, ph, pw)
    assert (best == 7).all() and (argmax == 7).all() and (out == 7).all()


def test_pooling_reads_its_geometry_from_the_shapes():
    # floor mode: maps of 5 x 4 and of 4 x 5 rows pool by 2 x 2 to 2 x 2; argmax is the window
    # position of the first maximum, and max_unpool puts each delta back there
    rng = np.random.default_rng(3)
    for shape in ((2, 5, 4, 3), (1, 4, 5, 2)):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        n, h, w, c = shape
        best, argmax = np.empty((n, 2, 2, c), np.int8), np.empty((n, 2, 2, c), np.uint8)
        _fused.max_pool(x, 2, 2, best, argmax)
        windows = x[:, :4, :4].reshape(n, 2, 2, 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, 2, 2, c, 4)
        np.testing.assert_array_equal(best, windows.max(axis=-1))
        np.testing.assert_array_equal(argmax, windows.argmax(axis=-1))
        delta = rng.integers(-1000, 1000, best.shape).astype(np.int32)
        out = np.full(shape, 7, np.int32)
        _fused.max_unpool(delta, argmax, 2, 2, out)
        expected = np.zeros((n, 2, 2, c, 4), np.int64)
        np.put_along_axis(expected, argmax[..., None].astype(np.int64), delta[..., None], axis=-1)
        covered = expected.reshape(n, 2, 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, 4, 4, c)
        np.testing.assert_array_equal(out[:, :4, :4], covered)
        assert (out[:, 4:] == 0).all() and (out[:, :, 4:] == 0).all()  # no window covers them: zero


@pytest.mark.parametrize("isa", PAIR_ISAS)
@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
@pytest.mark.parametrize("dtype", [np.int32, np.float64, np.int16, np.uint8, np.int64, np.float32, np.bool_])
def test_an_x_of_another_type_raises_value_error_and_writes_nothing(isa, name, dtype):
    # x is int8 in every pair function: another type is refused by its buffer format, even
    # one of exactly as many bytes (3 x 1 int32 span the 12 bytes of the int8 x (3, 4))
    call = _pair_calls(isa)[name]
    position = X_POSITION[name]
    assert call.arrays[position] == Arg("x", np.int8, False)
    m, k = call.args[position].shape
    for wrong in (call.args[position].astype(dtype), np.ones((m, max(1, k // np.dtype(dtype).itemsize)), dtype)):
        args = _prepared(call)
        snapshot = _snapshot(args, call)
        args[position] = wrong
        with pytest.raises(ValueError, match=r"dtype mismatch, expected '(const )?(npy_)?int8(_t)?'"):
            getattr(_fused, call.function)(*args)
        _assert_unwritten(args, snapshot)


@pytest.mark.parametrize("isa", PAIR_ISAS)
@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
@pytest.mark.parametrize("shape", [(3, 3), (3, 5), (2, 4), (4, 4), (6, 4), (2, 6), (1, 12), (12, 1), (0, 4),
                                   (3, 0), (12,), (11,), (0,), (3, 4, 1), (1, 3, 4)])
def test_an_x_of_another_shape_raises_value_error_and_writes_nothing(isa, name, shape):
    # x must be a matrix of exactly m rows of k int8 values: the same 12 values in another
    # shape ((2, 6), (12,)) no longer run as they did when only their count was checked
    call = _pair_calls(isa)[name]
    position = X_POSITION[name]
    args = _prepared(call)
    snapshot = _snapshot(args, call)
    args[position] = np.ones(shape, np.int8)
    if len(shape) != 2:
        pattern = "dimensions"
    else:
        pattern = _argument_names(call) + r": expected shape \(\d+, \d+\), got \(\d+, \d+\)|empty"
        if call.function in ("pairs_product", "pairs_scaled_product"):
            pattern += "|even"
    with pytest.raises(ValueError, match=pattern):
        getattr(_fused, call.function)(*args)
    _assert_unwritten(args, snapshot)
    args[position] = np.ones((3, 4), np.int8)  # the shape it takes: it runs
    getattr(_fused, call.function)(*args)


def _isa_param(isa):
    return pytest.param(isa, marks=pytest.mark.skipif(isa not in kernels.AVAILABLE, reason=f"this CPU has no {isa}"))


@pytest.mark.parametrize("isa", [_isa_param(isa) for isa in ISAS])
@pytest.mark.parametrize("index", [[10**9, 1], [-5, 1], [3, 3], [5, 1], [1, 8]])
def test_outlier_indices_outside_the_weights_or_unsorted_raise(isa, index):
    call = _pair_calls(isa)["pairs_product"]
    args = _prepared(call)
    snapshot = _snapshot(args, call)
    assert call.arrays[3].name == "index" and args[3].size == args[5] == 2  # the outlier indices, and their count
    args[3] = np.array(index, np.int32)
    with pytest.raises(ValueError, match="outlier index"):
        _fused.pairs_product(*args)
    _assert_unwritten(args, snapshot)


@pytest.mark.parametrize("isa", [_isa_param(isa) for isa in ISAS])
@pytest.mark.parametrize("count", [-1, 3, 2**40])
def test_an_outlier_count_past_the_list_raises(isa, count):
    call = _pair_calls(isa)["pairs_product"]
    args = _prepared(call)
    snapshot = _snapshot(args, call)
    args[5] = count
    with pytest.raises((ValueError, OverflowError), match=r"count must be in \[0, 2\]|too large|convert"):
        _fused.pairs_product(*args)
    _assert_unwritten(args, snapshot)


# -- the instruction set ---------------------------------------------------------------------

def _with_isa(name, isa):
    """A valid call of ``name`` but for its ISA (any CPU: the name is checked first), and the
    arrays it would write."""
    call = _pair_calls("avx2")[name]
    args = _fresh(call.args)
    args[0] = isa
    return call.function, args, [args[position] for position, arg in call.arrays.items() if arg.written]


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
    # (an embedded NUL or a lone surrogate too)
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


@pytest.mark.parametrize("rescale", [0, -1111, 2**23, 2**40])
def test_a_dropout_rescale_outside_its_range_raises_and_writes_nothing(rescale):
    call = CALLS["dropout_apply"]
    args = _prepared(call)
    args[2] = rescale
    snapshot = _snapshot(args, call)
    with pytest.raises((ValueError, OverflowError), match="rescale|too large|int"):
        _fused.dropout_apply(*args)
    _assert_unwritten(args, snapshot)


@pytest.mark.parametrize("bit_generator", [None, np.random.default_rng(0), np.random.RandomState(0), "PCG64", 3])
def test_a_dropout_draw_without_a_numpy_bit_generator_raises_type_error(bit_generator):
    mask = np.full(8, 7, np.uint8)
    with pytest.raises((TypeError, AttributeError)):
        _fused.dropout_mask(bit_generator, mask, 50)
    assert (mask == 7).all()


@pytest.mark.parametrize("keep_percent", [-1, 101, 2**31 - 1, -2**31])
def test_a_keep_percent_outside_0_100_raises_and_draws_nothing(keep_percent):
    rng, untouched = np.random.default_rng(5), np.random.default_rng(5)
    mask = np.full(8, 7, np.uint8)
    with pytest.raises(ValueError, match="keep_percent"):
        _fused.dropout_mask(rng.bit_generator, mask, keep_percent)
    assert (mask == 7).all() and rng.integers(2**62) == untouched.integers(2**62)


def test_scale_takes_z_by_its_type_not_its_length():
    # 6 float64 values span the bytes of 12 int32 ones: read as int32, they would be garbage
    with pytest.raises(ValueError, match=re.escape("z: expected shape (12,), got (6,)")):
        _fused.scale_to_int8(np.arange(6, dtype=np.float64), 3, np.empty(12, np.int8))
    out = np.empty(12, np.int8)
    _fused.scale_to_int8(np.arange(12, dtype=np.float64) * 3, 3, out)
    assert out.tolist() == list(range(12))


@pytest.mark.parametrize("kh, kw, ph, pw", [(2**62, 4, 2**62 - 1, 0), (4, 2**62, 0, 2**62 - 1),
                                            (2**32, 2**32, 2**32 - 1, 2**32 - 1), (2**63 - 1, 2, 2**62, 0)])
def test_windows_whose_size_wraps_c_integers_raise_value_error(kh, kw, ph, pw):
    # kh * kw (or h + 2 ph) in C integers would wrap past the checks, and the loops divide by
    # it: run in a child, so that a crash fails this test rather than the whole run
    script = f"""
import numpy as np
from sknitro import _fused
x, out = np.ones((1, 1, 4, 1), np.int8), np.zeros((1, 1, 4, 1), np.int32)
best, argmax = np.zeros((1, 1, 1, 1), np.int8), np.zeros((1, 1, 1, 1), np.uint8)
for call in (lambda: _fused.max_pool(x, {kh}, {kw}, best, argmax, {ph}, {pw}),
             lambda: _fused.max_unpool(np.ones((1, 1, 1, 1), np.int32), argmax, {kh}, {kw}, out, {ph}, {pw})):
    try:
        call()
    except ValueError as error:
        assert "do not make a pooling" in str(error)
    else:
        raise SystemExit("no ValueError")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])


@pytest.mark.parametrize("isa", PAIR_ISAS)
# a dense layer (one block of rows, and tile groups) and a narrow one
@pytest.mark.parametrize("k, batch", [(64, 3), (64, 300), (9, 3), (9, 300)])
@pytest.mark.parametrize("mirror", ["split", "pairs"])
@pytest.mark.parametrize("value", [2**23, -(2**23) - 1, 2**31 - 1, -(2**31)])
def test_an_update_with_a_delta_no_split_unit_holds_raises_and_writes_nothing(isa, k, batch, mirror, value):
    rng = np.random.default_rng(k + batch)
    delta = rng.integers(-1000, 1000, (batch, 6)).astype(np.int32)
    delta[batch - 1, 5] = value  # in the last row: found before anything is written
    x = rng.integers(-128, 128, (batch, k)).astype(np.int8)
    w = rng.integers(-(2**20), 2**20, (6, k)).astype(np.int32)
    before = w.copy()
    pair_form = (np.full((6, k), 7, np.int16), np.zeros(8, np.int32), np.zeros(8, np.int32))
    buffers = pair_form if mirror == "pairs" else (np.full((6, k), 7, np.int32),)
    with pytest.raises(ValueError, match=r"delta: values must be in \[-2\*\*23, 2\*\*23\)"):
        _fused.units_sgd_update(isa, delta, x, w, buffers[0], 1, 0, *buffers[1:], sums_fit_int32=False)
    np.testing.assert_array_equal(w, before)
    assert (buffers[0] == 7).all()
    delta[batch - 1, 5] = -(2**23) if value < 0 else 2**23 - 1  # the range's ends are taken
    _fused.units_sgd_update(isa, delta, x, w, buffers[0], 1, 0, *buffers[1:], sums_fit_int32=False)
    assert not np.array_equal(w, before)


@pytest.mark.parametrize("entry", [-1, 1001, 2**31 - 1])
def test_an_activation_table_past_its_divisor_raises(entry):
    g, pre = np.ones((2, 3), np.int32), np.zeros((2, 3), np.int8)
    table, out = np.full(256, 1000, np.int32), np.full((2, 3), 7, np.int32)
    table[200] = entry
    with pytest.raises(ValueError, match=r"table\[200\] = .* is outside \[0, divisor = 1000\]"):
        _fused.activation_backward(g, pre, table, 1000, out)
    assert (out == 7).all()
    table[200] = 1000
    _fused.activation_backward(g, pre, table, 1000, out)
    np.testing.assert_array_equal(out, np.ones((2, 3)))


@pytest.mark.parametrize("case", ["scores", "input gradient", "gradient", "new weights"])
def test_a_head_step_whose_int32_sums_could_overflow_raises_and_writes_nothing(case):
    # the bounds the engine proves before calling (sknitro.nn.kernels): checked here too
    batch, features, classes, w_value, divisor = {
        "scores": (4, 64, 3, 2**31 // (128 * 64) + 1, 1),  # 128 * max|w| * features
        "input gradient": (4, 8, 3000, 2**31 // (255 * 3000) + 1, 1),  # 255 * max|w| * classes
        "gradient": (2**31 // (255 * 128) + 1, 2, 2, 1, 1),  # 255 * 128 * batch
        "new weights": (65700, 1, 1, 8_000_000, 1),  # max|w| + |G| / divisor
    }[case]
    x, target = np.ones((batch, features), np.int8), np.zeros((batch, classes), np.int8)
    w = np.full((classes, features), w_value, np.int32)
    w[0, 0] = -w_value
    before = w.copy()
    yhat = np.full((batch, classes), 7, np.int8)
    with pytest.raises(ValueError, match="int32 sums or the new w could overflow"):
        _fused.head_step(x, w, target, 256, divisor, 0, yhat, None)
    np.testing.assert_array_equal(w, before)
    assert (yhat == 7).all()
    w //= 4  # within the bounds (but the gradient's, which w does not change): it runs
    if case != "gradient":
        _fused.head_step(x, w, target, 256, divisor, 0, yhat, None)
        assert not np.array_equal(w, before // 4)
