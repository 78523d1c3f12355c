"""The compiled fused kernels of the CPU training step, and the bounds that let them run.

On the CPU the big products of a dense step run on float64 BLAS (algorithm.md §9). What
surrounds them is elementwise work over arrays as large as the weights -- converting the
gradient back to integers, dividing it (four passes for a truncated division), updating the
weights, scanning them for ``max|W|``, converting them to float64 for the next product --
and in NumPy each of those is one pass over memory. ``sknitro._fused`` (C, built with the
package) does the whole IntegerSGD update of a layer in one pass:
``W -= tdiv(G, lr_inv * amp) + tdiv(W, decay_inv)`` straight from the float64 product
``G``, keeping a float64 copy of ``W`` (the next forward product's operand) and returning
``max|W|``. Likewise NITRO scaling and the activation table lookup run in one pass over the
float64 forward product, and the activation's backward in one pass over its gradient. A
learning head's whole update runs in one call of int32 loops (:func:`head_step`), and the
image encoder's table lookup in one pass (:func:`lookup_uint8`). On CPUs with AVX-512 VNNI
the dense products themselves leave float64 BLAS (:func:`units_scaled_product`,
:func:`units_sgd_update`; see the section below).

The kernels compute exactly what the NumPy path computes; they run only when a bound proves
that every integer fits their 32-bit arithmetic, and otherwise the NumPy path does the
work. They are off under ``config_context(gemm="integer")`` or ``fused_kernels=False``,
on the GPU, and where the package was built without a C compiler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._config import fused_kernels_allowed
from ..backend import FLOAT64_EXACT_LIMIT, INT32_LIMIT, dtype_bound, float64_product

try:
    from .. import _fused as _kernels
except ImportError:  # built without a C compiler: the NumPy path does the same work
    _kernels = None

AVAILABLE = _kernels is not None
KERNEL_DIVISOR_LIMIT = 2**31  # divisors of the 32-bit multiply-and-shift division


def _update_divisors_fit(divisor: int, decay_inv: int) -> bool:
    """Whether an update's divisors suit the kernels' 32-bit division (``decay_inv`` 0: no decay)."""
    return 1 <= divisor < KERNEL_DIVISOR_LIMIT and 0 <= decay_inv < KERNEL_DIVISOR_LIMIT


def active(array: Any) -> bool:
    """Whether the fused kernels may process ``array`` (a host int32 array) now."""
    return (_kernels is not None and isinstance(array, np.ndarray) and array.dtype == np.int32
            and array.flags.c_contiguous and fused_kernels_allowed())


def scaled_product(x: Any, weight: Any, weight_bound: int, scale: int, table: Any = None,
                   weight64: Any = None) -> Any:
    """NITRO scaling of ``x @ weight.T`` as int8, fused; None if it cannot run.

    ``weight`` is ``(out, in)`` with ``max|weight| <= weight_bound`` (``weight64``: its
    float64 copy, if the caller keeps one). With an activation ``table`` (256 int8 values
    indexed by bit pattern) returns the pair ``(scaled, table[scaled])``. The kernel clamps
    the float64 product to ``±128 * scale`` (where the result saturates anyway) and divides
    in 32 bits, so it needs ``128 * scale < 2**31``.
    """
    if _kernels is None or not isinstance(x, np.ndarray) or not fused_kernels_allowed() \
            or 128 * scale >= KERNEL_DIVISOR_LIMIT \
            or dtype_bound(x) * weight_bound * x.shape[-1] >= FLOAT64_EXACT_LIMIT:
        return None
    return _scaled(float64_product(x, weight.T, None if weight64 is None else weight64.T), scale, table)


def _scaled(product: np.ndarray, scale: int, table: Any) -> Any:
    """NITRO scaling (and the activation ``table``) of an exact product, int32 or float64."""
    scaled = np.empty(product.shape, dtype=np.int8)
    if table is None:
        _kernels.scale_to_int8(product, scale, scaled)
        return scaled
    activated = np.empty_like(scaled)
    _kernels.scale_to_int8(product, scale, scaled, table, activated)
    return scaled, activated


# -- the VNNI products (sknitro/_vnni.c) ---------------------------------------------------
#
# On CPUs with AVX-512 VNNI a dense layer's two big products -- the forward x @ W.T and the
# weight gradient delta.T @ x, fused there with the whole IntegerSGD update -- run on int16
# pair instructions instead of float64 BLAS (VPDPWSSD: acc += a0 * b0 + a1 * b1 in each int32
# lane). Wider integers travel as a pair of int16 that the instruction recombines: x as
# (x, 256 x), delta (and W, where needed) as (a & 255, a >> 8), |a| < 2**23, one product per
# pair. The forward takes two products per pair instead, from x and W as plain int16: W's
# "pair form" saturates it to int16, and the few weights past that (its outliers: dozens of
# the first layer's 157k) are added back exactly. int32 lanes wrap modulo 2**32, so a sum is
# exact whenever its true value fits int32, which these functions prove from L1 norms before
# each call.

VNNI = AVAILABLE and _kernels.vnni_available()
UNITS_LIMIT = 2**23  # |a| < 2**23: a >> 8 fits the int16 half of a split unit
PAIR_LIMIT = 2**15  # |w| <= 2**15 in a weight's pair form (int16, saturated)
OUTLIER_CAPACITY = 512  # outliers a pair form corrects; past that, the forward uses split units


def units_active(x: Any) -> bool:
    """Whether the VNNI products may take ``x`` (a host int8 matrix) as their input now."""
    return (VNNI and isinstance(x, np.ndarray) and x.dtype == np.int8 and x.ndim == 2 and x.size > 0
            and x.flags.c_contiguous and fused_kernels_allowed())


def _input_units(layer: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``x`` as input units, as int16 (for the pair product, when the layer can take it), and
    its largest row L1 norm, cached on ``layer``: the forward product makes them and the weight
    update of the same batch reuses them."""
    cached = layer.input_units  # read once: another thread may replace or drop it
    if cached is None or cached[0] is not x:
        units = np.empty(x.shape, dtype=np.int32)
        # the pair form needs an even width, and int32 flat indices for its outliers
        pairs = np.empty(x.shape, dtype=np.int16) if x.shape[1] % 2 == 0 and layer.weight.size <= INT32_LIMIT \
            else None
        cached = layer.input_units = (x, units, pairs, _kernels.input_units(x, x.shape[1], units, pairs))
    return cached[1], cached[2], cached[3]


def _pair_buffers(layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The buffers ``(pairs, index, residual)`` of ``layer``'s pair form: its current ones
    (training reuses them: no other thread reads a model being fitted), or new ones."""
    weight_pairs = layer.weight_pairs
    return _new_pair_buffers(layer) if weight_pairs is None else weight_pairs[:3]


def _new_pair_buffers(layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.empty(layer.weight.shape, dtype=np.int16), np.empty(OUTLIER_CAPACITY, np.int32),
            np.empty(OUTLIER_CAPACITY, np.int32))


def _weight_pairs(layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """``layer``'s pair form ``(pairs, index, residual, count)``, made if missing; None when
    it has more outliers than it can hold.

    Safe from many threads at once (a fitted model predicting in parallel): the attribute is
    read once, and a new pair form is made in new buffers and published whole, so no thread
    ever reads a buffer that another one is filling or has dropped.
    """
    weight_pairs = layer.weight_pairs
    if weight_pairs is None:
        pairs, index, residual = _new_pair_buffers(layer)
        count = _kernels.pair_form(layer.weight, layer.in_features, pairs, index, residual)
        weight_pairs = layer.weight_pairs = (pairs, index, residual, count)
    return weight_pairs if weight_pairs[3] <= OUTLIER_CAPACITY else None


def _chunk(row_l1: int, x_bound: int, weight_bound: int, products_per_unit: int, units: int) -> int:
    """Units per int32 partial sum: all of them when ``row_l1 * weight_bound`` fits int32,
    else as many whole vectors (16 units) as ``x_bound * weight_bound`` per product allows
    (0: none)."""
    if row_l1 * weight_bound <= INT32_LIMIT:
        return units
    return INT32_LIMIT // (products_per_unit * x_bound * weight_bound) // 16 * 16


def units_scaled_product(layer: Any, x: Any, scale: int, table: Any = None) -> Any:
    """:func:`scaled_product` of a bias-free ``layer`` on the VNNI product; None if it
    cannot run.

    The kernel's int32 lanes must hold exact partial sums. When ``max_i sum_k |x[i, k]|
    * max|W|`` (``max|W|`` of the pair form: at most ``2**15``) is below ``2**31`` one sum
    covers a whole row; otherwise the kernel adds up chunks that fit in int64 and saturates
    ``z`` to int32, which scaling cannot tell apart from ``z`` itself since
    ``128 * scale < 2**31``.
    """
    if not units_active(x) or not active(layer.weight) or 128 * scale >= KERNEL_DIVISOR_LIMIT:
        return None
    x_units, x_pairs, row_l1 = _input_units(layer, x)
    (batch, inputs), outputs = x.shape, layer.out_features
    product = np.empty((batch, outputs), dtype=np.int32)
    weight_pairs = None if x_pairs is None else _weight_pairs(layer)
    if weight_pairs is not None:
        pairs, index, residual, count = weight_pairs
        chunk = _chunk(row_l1, dtype_bound(x), min(layer.weight_bound, PAIR_LIMIT), 2, inputs // 2)
        _kernels.pairs_product(x_pairs, pairs, x, index, residual, count, batch, outputs, inputs, chunk, product)
        return _scaled(product, scale, table)
    if layer.weight_bound >= UNITS_LIMIT:
        return None
    chunk = _chunk(row_l1, dtype_bound(x), layer.weight_bound, 1, inputs)
    if chunk == 0:
        return None
    weight_units = layer.weight_units  # read once, made whole before it is published (threads)
    if weight_units is None:
        weight_units = np.empty_like(layer.weight)
        _kernels.split_units(layer.weight, weight_units)
        layer.weight_units = weight_units
    _kernels.units_product(x_units, weight_units, batch, outputs, inputs, chunk, product)
    return _scaled(product, scale, table)


def units_sgd_update(layer: Any, delta: Any, x: Any, grad_bound: int, divisor: int, decay_inv: int) -> bool:
    """:func:`sgd_update` on the VNNI product; False if it cannot run.

    ``grad_bound / max|x|`` bounds ``max|delta|`` too (it is ``max|x|`` times a column L1
    norm of ``delta``, or times ``max|delta| * batch``), which proves the split units. The
    kernel writes the next forward's copy of ``W``: its pair form, or, for an odd number of
    inputs, its split units.
    """
    if not units_active(x) or not active(delta) or delta.ndim != 2 or grad_bound > INT32_LIMIT \
            or grad_bound // dtype_bound(x) >= UNITS_LIMIT or not _update_divisors_fit(divisor, decay_inv):
        return False
    x_units, x_pairs, _ = _input_units(layer, x)
    (batch, outputs), inputs = delta.shape, x.shape[1]
    if x_pairs is not None:  # even width: the pair form, in the buffers of the last one if any
        pairs, index, residual = _pair_buffers(layer)
        layer.weight_bound, count = _kernels.units_sgd_update(delta, x_units, layer.weight, pairs, batch, outputs,
                                                              inputs, divisor, decay_inv, index, residual)
        layer.weight_pairs, layer.weight_units = (pairs, index, residual, count), None
    else:
        units = layer.weight_units if layer.weight_units is not None else np.empty_like(layer.weight)
        layer.weight_bound, _ = _kernels.units_sgd_update(delta, x_units, layer.weight, units, batch, outputs,
                                                          inputs, divisor, decay_inv)
        # past the units' range the copy is not valid
        layer.weight_units = units if layer.weight_bound < UNITS_LIMIT else None
        layer.weight_pairs = None
    layer.weight64 = layer.input_units = None  # the float64 copy is stale; the input is used up
    return True


def activation_backward(delta: Any, pre_activation: Any, multiplier: Any, divisor: int) -> tuple[Any, int] | None:
    """``tdiv(delta * multiplier[pre_activation], divisor)``, fused, and the largest column L1
    norm of the result (rows: the batch), which bounds the weight gradient
    (:meth:`~sknitro.nn.layers.IntegerLinear.weight_grad_bound`); None if it cannot run.
    The kernel is exact for every int32 ``delta`` (``multiplier <= divisor``)."""
    if not active(delta) or not pre_activation.flags.c_contiguous or divisor >= KERNEL_DIVISOR_LIMIT \
            or delta.ndim == 0:
        return None
    out = np.empty_like(delta)
    column_l1 = _kernels.activation_backward(delta, pre_activation, multiplier, divisor, out, delta.shape[-1])
    return out, column_l1


def sgd_update(layer: Any, delta: Any, x: Any, grad_bound: int, divisor: int, decay_inv: int) -> bool:
    """IntegerSGD on ``layer.weight`` with ``G = delta.T @ x``, fused; False if it cannot run.

    ``grad_bound`` bounds ``max|G|``, and the caller has proven that the updated weights fit
    int32. The kernel needs ``|G| < 2**31`` and divisors below ``2**31``; the product is
    exact in float64 far beyond that. On success ``layer.weight_bound`` and the float64 copy
    ``layer.weight64`` are up to date.
    """
    if grad_bound > INT32_LIMIT or not _update_divisors_fit(divisor, decay_inv):
        return False
    grad = float64_product(delta.T, x)
    if layer.weight64 is None:
        layer.weight64 = np.empty(layer.weight.shape, dtype=np.float64)
    layer.weight_bound = _kernels.sgd_update(layer.weight, grad, divisor, decay_inv, layer.weight64)
    layer.weight_units = layer.weight_pairs = None
    return True


def head_step(layer: Any, x: Any, target: Any, scale: int, divisor: int, decay_inv: int,
              propagate: bool, error_bound: int) -> tuple[Any, Any, int] | None:
    """A learning head's update (``LinearHead.learn``) in one compiled call; None if it
    cannot run.

    The kernel works in int32 loops, no float at all: heads have few outputs, so their
    three products are cheaper there than through float64 BLAS and back. It needs int8
    ``x`` and ``target``, and every sum in int32: the scores (``max|x| * max|W| * in``), the
    input gradient (``error_bound * max|W| * classes``) and ``G``
    (``error_bound * max|x| * batch``). The caller has proven that the updated weights fit
    int32. Returns ``(yhat, input_grad or None, squared_error)``.
    """
    weight = layer.weight
    if not active(weight) or layer.bias is not None or x.ndim != 2 or x.dtype != np.int8 \
            or target.dtype != np.int8 or not (x.flags.c_contiguous and target.flags.c_contiguous) \
            or 128 * scale >= KERNEL_DIVISOR_LIMIT or not _update_divisors_fit(divisor, decay_inv):
        return None
    (batch, features), classes = x.shape, weight.shape[0]
    if max(128 * layer.weight_bound * features, error_bound * layer.weight_bound * classes,
           error_bound * 128 * batch) > INT32_LIMIT:
        return None
    yhat = np.empty((batch, classes), dtype=np.int8)
    input_grad = np.empty((batch, features), dtype=np.int32) if propagate else None
    squared_error, layer.weight_bound = _kernels.head_step(x, weight, target, batch, scale, divisor,
                                                           decay_inv, yhat, input_grad)
    layer.drop_copies()  # the kernel updated the weights in place
    return yhat, input_grad, squared_error


def lookup_uint8(table: Any, x: Any) -> Any:
    """``table[x]`` for a uint8 array ``x`` and an int8 table of 256 entries, in one compiled
    pass (the image encoder's lookup); None if it cannot run."""
    if _kernels is None or not isinstance(x, np.ndarray) or x.dtype != np.uint8 \
            or not x.flags.c_contiguous or not fused_kernels_allowed():
        return None
    out = np.empty(x.shape, dtype=np.int8)
    _kernels.lookup_uint8(table, x, out)
    return out
