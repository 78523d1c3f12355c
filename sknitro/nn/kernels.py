"""The kernels of the training step: one interface, one implementation per kind of CPU.

Every integer operation of a step whose cost grows with the data goes through a
:class:`NumpyKernels` object (the interface and the reference implementation):

========================  ================================================================
``product``               ``z = x @ W.T (+ b)`` of a layer, exact (algorithm.md §9)
``input_grad``            ``delta @ W``
``scaled_forward``        NITRO scaling of the product, and the activation's table lookup
``activation_backward``   ``tdiv(delta * multiplier[s], D)``, and the bound it gives ``G``
``sgd_update``            IntegerSGD on a layer with ``G = delta.T @ x`` (§5)
``head_step``             a learning head's whole update (§4)
``lookup_uint8``          the image encoder's table lookup
``dropout_mask``          dropout's keep mask, drawn on the host, and its output (``dropout_forward``)
``im2col``                the patches of a conv layer's input maps, as rows
``max_pool``              a max pooling of a conv map, and its gradient (``max_pool_backward``)
========================  ================================================================

The implementations, each a subclass of the one before, which it calls (``super()``)
whenever its bounds do not prove an operation exact in its integer types:

``"numpy"`` (:class:`NumpyKernels`)
    The readable reference: NumPy (or CuPy) arithmetic, products on
    :func:`~sknitro.backend.exact_matmul`. Runs everywhere, GPU included.
``"c"`` (:class:`CompiledKernels`)
    Products on float64 BLAS, proven exact, with everything around them fused into
    portable C passes (``sknitro._fused``; the rules are written once, in ``_rules.h``),
    and im2col and max pooling in C.
``"avx2"``, ``"vnni"`` (:class:`PairKernels`)
    The dense and convolution products themselves on int16 pair instructions: AVX2's
    ``VPMADDWD`` or AVX-512 VNNI's ``VPDPWSSD`` (``_pairs.h``).

All give the same integers. :func:`select` returns the fastest this CPU runs, unless
``config_context(kernels=...)`` pins one (``gemm="integer"`` or ``fused_kernels=False``
pin ``"numpy"``).

Each implementation owns what it keeps of a layer between calls (:class:`LayerCopies`, in
the layer's ``kernel_cache`` slot: weight copies in the forms the next products read) and
keeps it in step with every weight change it makes. Any other change of the weights goes
through the layer's ``refresh_bounds``, which drops it.
Inference from many threads at once is safe: a copy is built whole in new arrays before it
is published, and each call reads the slot once.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import threading
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from .._config import kernels_setting
from ..backend import (FLOAT64_EXACT_LIMIT, INT32_LIMIT, abs_max, array_namespace, dtype_bound, exact_matmul,
                       float64_product)
from .functional import im2col, tdiv, to_int8

try:
    from .. import _fused as _compiled
except ImportError:  # built without a C compiler: the NumPy kernels do the same work
    _compiled = None

ERROR_BOUND = 127 + 128  # |yhat - target| for int8 scores in [-127, 127] and int8 targets
KERNEL_DIVISOR_LIMIT = 2**31  # divisors of the C kernels' 32-bit multiply-and-shift division
UNITS_LIMIT = 2**23  # |a| < 2**23: a >> 8 fits the int16 half of a split unit
PAIR_LIMIT = 2**15  # |w| <= 2**15 in a weight's pair form (int16, saturated)
OUTLIER_CAPACITY = 512  # outliers a pair form corrects; past that, the forward uses split units
# Narrower inputs (a first conv layer's 9 or 27 patch values) would leave most of a tile along
# the inputs empty: the kernels put the outputs in the vector lanes instead (_pairs.h, "narrow
# layers"), on the weights' split units.
PAIR_MIN_WIDTH = 64


def nitro_scale(z: Any, scale_factor: int) -> Any:
    """NITRO scaling: ``clip(tdiv(z, SF), -127, 127)`` as int8; its backward is the identity."""
    return to_int8(tdiv(z, scale_factor))


def updated_bound(param_bound: int, grad_bound: int, divisor: int, decay_inv: int) -> int:
    """A bound of ``max|param|`` after an IntegerSGD update; OverflowError past int32."""
    decays = decay_inv > 0 and param_bound >= decay_inv
    worst = param_bound + grad_bound // divisor + (param_bound // decay_inv if decays else 0)
    if worst > INT32_LIMIT:
        raise OverflowError(
            f"an int32 weight could overflow after this update (bound {worst}); lower the learning "
            "rate (raise lr_inv or lower lr_amp) or strengthen weight decay (lower *_decay_inv)"
        )
    return worst


def integer_sgd_step(param: Any, grad: Any, grad_bound: int, param_bound: int,
                     divisor: int, decay_inv: int) -> int:
    """In place ``param -= tdiv(grad, divisor) + tdiv(param, decay_inv)``; returns ``max|param|``.

    The decay term is skipped when ``decay_inv == 0`` and whenever ``max|param| < decay_inv``,
    where ``tdiv(param, decay_inv)`` is zero everywhere anyway.
    """
    updated_bound(param_bound, grad_bound, divisor, decay_inv)  # raises past int32
    decays = decay_inv > 0 and param_bound >= decay_inv
    # past every |G| the quotient is 0 everywhere (and the divisor may not fit int64)
    update = tdiv(grad, divisor) if divisor <= grad_bound else 0
    if decays:
        update = update + tdiv(param, decay_inv)
    param -= update  # int64 -> int32 in place: the bound above proves it fits
    return abs_max(param)


def weight_grad_bound(delta: Any, x: Any, delta_bound: int | None = None, column_l1: int | None = None) -> int:
    """A bound of ``sum_i |delta[i, j] * x[i, k]|``, hence of ``max|G|``, without forming G.

    ``|G[j, k]| <= max|x| * sum_i |delta[i, j]|``: the largest column L1 norm of ``delta``
    (one pass over the small ``(batch, out)`` delta, unless the caller has it as
    ``column_l1``) bounds G about ten times tighter than ``max|delta| * max|x| * batch``
    does, which keeps G, and the whole update, in int32. A caller that knows
    ``max|delta| <= delta_bound`` (a head's error) skips that pass whenever the factor
    bound already keeps G in int32.
    """
    x_bound = dtype_bound(x)
    if column_l1 is not None:
        return x_bound * column_l1
    if delta_bound is not None and x_bound * delta_bound * delta.shape[0] <= INT32_LIMIT:
        return x_bound * delta_bound * delta.shape[0]
    xp = array_namespace(delta)
    column_l1 = int(abs(delta.astype(xp.int64)).sum(axis=0).max()) if delta.size else 0
    return x_bound * column_l1


def weight_grad(delta: Any, x: Any, delta_bound: int | None = None,
                column_l1: int | None = None) -> tuple[Any, int]:
    """``G = delta.T @ x``, exact, and its bound from :func:`weight_grad_bound` (no pass over G)."""
    bound = weight_grad_bound(delta, x, delta_bound, column_l1)
    return exact_matmul(delta.T, x, sum_bound=bound), bound


# -- what an implementation keeps of a layer -----------------------------------------------


@dataclass(frozen=True)
class PairForm:
    """A weight matrix as int16, saturated, and its outliers (the weights past int16: flat
    index, ascending, and what saturation cut off); ``count`` may exceed the buffers."""

    pairs: np.ndarray
    index: np.ndarray
    residual: np.ndarray
    count: int


@dataclass(frozen=True)
class LayerCopies:
    """Copies of a layer's weights in the forms the kernels' next products read. Frozen: a
    change publishes a new object (threads may be reading the old one)."""

    float64: np.ndarray | None = None  # W as float64, for BLAS
    pairs: PairForm | None = None  # W's pair form (even widths)
    units: np.ndarray | None = None  # W's split units (odd widths, or too many outliers)


def _copies(layer: Any) -> LayerCopies:
    return layer.kernel_cache or LayerCopies()


def _publish(layer: Any, **changes: Any) -> None:
    """Replace fields of ``layer``'s copies (the slot is read once, then written whole)."""
    layer.kernel_cache = replace(_copies(layer), **changes)


# -- the implementations ----------------------------------------------------------------


class NumpyKernels:
    """The reference implementation: NumPy or CuPy arrays, any bounds (see the module)."""

    name = "numpy"

    def product(self, layer: Any, x: Any) -> Any:
        """``x @ W.T (+ b)``, exact, int32 or int64."""
        z = exact_matmul(x, layer.weight.T, bound_b=layer.weight_bound, b_float64=self._float64_transposed(layer))
        return z if layer.bias is None else z + layer.bias

    def input_grad(self, layer: Any, delta: Any, delta_bound: int | None = None) -> Any:
        """``delta @ W``: the gradient with respect to the layer's input."""
        mirror = self._float64_transposed(layer)
        return exact_matmul(delta, layer.weight, delta_bound, layer.weight_bound,
                            b_float64=None if mirror is None else mirror.T)

    def _float64_transposed(self, layer: Any) -> Any:
        return None

    def scaled_forward(self, layer: Any, x: Any, scale: int, table: Any = None) -> Any:
        """``s = nitro_scale(product(x), scale)``, or ``(s, table[s])`` with an activation
        ``table`` (256 int8 values indexed by the bit pattern of ``s``)."""
        scaled = nitro_scale(self.product(layer, x), scale)
        if table is None:
            return scaled
        return scaled, array_namespace(scaled).take(table, scaled.view(np.uint8))  # take: 2x table[index]

    def activation_backward(self, delta: Any, s: Any, multiplier: Any,
                            divisor: int) -> tuple[Any, int | None, int | None]:
        """``tdiv(delta * multiplier[s], divisor)`` for int8 ``s``, and, when computed on the
        way (else None), the result's largest column L1 norm and largest magnitude: the
        ``column_l1`` and ``delta_bound`` of :meth:`sgd_update`."""
        xp = array_namespace(delta)
        # int32 arithmetic when the product provably fits (half the memory traffic), else int64
        if delta.dtype.itemsize > 4 or abs_max(delta) * divisor > INT32_LIMIT:
            delta = delta.astype(np.int64)
        return tdiv(delta * xp.take(multiplier, s.view(np.uint8)), divisor), None, None

    def sgd_update(self, layer: Any, delta: Any, x: Any, divisor: int, decay_inv: int,
                   delta_bound: int | None = None, column_l1: int | None = None) -> None:
        """IntegerSGD on ``layer`` with ``G = delta.T @ x`` (and ``delta.sum(0)`` for a bias).

        ``delta_bound`` bounds ``max|delta|`` and ``column_l1`` is ``max_j sum_i |delta[i, j]|``
        when the caller knows them (see :func:`weight_grad_bound`)."""
        layer.drop_copies()  # the in-place update leaves every copy stale
        grad, grad_bound = weight_grad(delta, x, delta_bound, column_l1)
        layer.weight_bound = integer_sgd_step(layer.weight, grad, grad_bound, layer.weight_bound, divisor, decay_inv)
        if layer.bias is not None:
            bias_grad = delta.sum(axis=0)
            layer.bias_bound = integer_sgd_step(layer.bias, bias_grad, abs_max(bias_grad), layer.bias_bound,
                                                divisor, decay_inv)

    def head_step(self, layer: Any, x: Any, target: Any, scale: int, divisor: int, decay_inv: int,
                  propagate: bool) -> tuple[Any, Any, int]:
        """A learning head's update on its local loss ``sum((yhat - y)**2)``: returns the
        scores ``yhat`` from before the update, ``e @ W`` with the weights from before the
        update (when ``propagate``, else None) and ``sum(e**2)``, for ``e = yhat - y``."""
        yhat = self.scaled_forward(layer, x, scale)
        error = yhat.astype(np.int16) - target  # int8 would wrap: 32 - (-127) = 159
        input_grad = self.input_grad(layer, error, ERROR_BOUND) if propagate else None
        self.sgd_update(layer, error, x, divisor, decay_inv, delta_bound=ERROR_BOUND)
        error32 = error.astype(np.int32)
        return yhat, input_grad, int((error32 * error32).sum())

    def lookup_uint8(self, table: Any, x: Any) -> Any:
        """``table[x]`` for uint8 ``x`` and an int8 table of 256 entries."""
        return array_namespace(x).take(table, x)  # take: twice as fast as table[x]

    def dropout_mask(self, rng: np.random.Generator, shape: tuple[int, ...], keep_percent: int) -> np.ndarray:
        """Dropout's keep mask (a host bool array): ``integers(0, 100) < keep_percent``."""
        return rng.integers(0, 100, size=shape, dtype=np.int8) < keep_percent

    def dropout_forward(self, dropout: Any, x: Any, mask: Any) -> Any:
        """``dropout`` (an :class:`~.layers.IntegerDropout`) on ``x`` with its keep ``mask``."""
        return dropout.reference_forward(x, mask)

    def im2col(self, x: Any, kernel: int, padding: int) -> Any:
        """The patches of the maps ``x`` as rows (:func:`~.functional.im2col`)."""
        return im2col(x, kernel, padding)

    def max_pool(self, pool: Any, x: Any) -> tuple[Any, Any]:
        """``pool`` (a :class:`~.conv.MaxPool2d`) on the map ``x``: the pooled map and the
        arg-max of each window."""
        return pool.reference_forward(x)

    def max_pool_backward(self, pool: Any, delta: Any, argmax: Any, input_shape: tuple[int, ...]) -> Any:
        """The gradient through ``pool``: ``delta`` at each window's arg-max."""
        return pool.reference_backward(delta, argmax, input_shape)

    def thread_pools(self) -> contextlib.AbstractContextManager:
        """A context for a run of many steps (an epoch) with the thread pools this
        implementation wants; the reference leaves them as they are."""
        return contextlib.nullcontext()


def _host_int32(array: Any) -> bool:
    return isinstance(array, np.ndarray) and array.dtype == np.int32 and array.flags.c_contiguous


class CompiledKernels(NumpyKernels):
    """Float64 BLAS products (exact by §9) with the passes around them fused in C."""

    name = "c"

    def thread_pools(self) -> contextlib.AbstractContextManager:
        # The products run on BLAS's threads; the passes around them stay on one: the two
        # pools' idle threads spinning on the same cores made a 2-thread compact-CNN epoch
        # slower than 1 thread (benchmarks/bench_kernels.py).
        return _SINGLE_THREADED_OPENMP

    def _float64_transposed(self, layer: Any) -> Any:
        mirror = _copies(layer).float64
        return None if mirror is None else mirror.T

    def scaled_forward(self, layer: Any, x: Any, scale: int, table: Any = None) -> Any:
        # the kernel clamps z to ±128 * scale (where the result saturates anyway) and divides in 32 bits
        if layer.bias is not None or not isinstance(x, np.ndarray) or 128 * scale >= KERNEL_DIVISOR_LIMIT \
                or dtype_bound(x) * layer.weight_bound * x.shape[-1] >= FLOAT64_EXACT_LIMIT:
            return super().scaled_forward(layer, x, scale, table)
        return _scaled(float64_product(x, layer.weight.T, self._float64_transposed(layer)), scale, table)

    def activation_backward(self, delta: Any, s: Any, multiplier: Any,
                            divisor: int) -> tuple[Any, int | None, int | None]:
        # exact for every int32 delta (multiplier <= divisor)
        if not _host_int32(delta) or not s.flags.c_contiguous or divisor >= KERNEL_DIVISOR_LIMIT or delta.ndim == 0:
            return super().activation_backward(delta, s, multiplier, divisor)
        out = np.empty_like(delta)
        columns = delta.shape[-1]
        column_l1, largest = _compiled.activation_backward(delta.reshape(-1, columns), s.reshape(-1, columns),
                                                           multiplier, divisor, out.reshape(-1, columns))
        return out, column_l1, largest

    def sgd_update(self, layer: Any, delta: Any, x: Any, divisor: int, decay_inv: int,
                   delta_bound: int | None = None, column_l1: int | None = None) -> None:
        # the kernel needs |G| < 2**31 and 32-bit divisors; the product is exact in float64 far beyond
        if layer.bias is None and _host_int32(layer.weight) and isinstance(x, np.ndarray):
            grad_bound = weight_grad_bound(delta, x, delta_bound, column_l1)
            updated_bound(layer.weight_bound, grad_bound, divisor, decay_inv)  # raises past int32
            if self._sgd_update(layer, delta, x, grad_bound, divisor, decay_inv, delta_bound):
                return
        super().sgd_update(layer, delta, x, divisor, decay_inv, delta_bound, column_l1)

    def _sgd_update(self, layer: Any, delta: Any, x: Any, grad_bound: int, divisor: int, decay_inv: int,
                    delta_bound: int | None) -> bool:
        """The update for a proven ``grad_bound`` (and ``delta_bound``, if known); False when it
        cannot run."""
        if grad_bound > INT32_LIMIT or not _divisors_fit(divisor, decay_inv):
            return False
        grad = float64_product(delta.T, x)
        mirror = np.empty(layer.weight.shape, dtype=np.float64)
        layer.weight_bound = _compiled.sgd_update(layer.weight, grad, divisor, decay_inv, mirror)
        layer.kernel_cache = LayerCopies(float64=mirror)
        return True

    def head_step(self, layer: Any, x: Any, target: Any, scale: int, divisor: int, decay_inv: int,
                  propagate: bool) -> tuple[Any, Any, int]:
        # int32 loops, no float at all: heads have few outputs, so their three products are
        # cheaper there than through float64 BLAS and back. Every sum must fit int32: the
        # scores, the input gradient and G.
        fits = (_host_int32(layer.weight) and layer.bias is None and isinstance(x, np.ndarray) and x.ndim == 2
                and x.dtype == np.int8 and target.dtype == np.int8 and x.flags.c_contiguous
                and target.flags.c_contiguous and 128 * scale < KERNEL_DIVISOR_LIMIT
                and _divisors_fit(divisor, decay_inv))
        if not fits:
            return super().head_step(layer, x, target, scale, divisor, decay_inv, propagate)
        (batch, features), classes = x.shape, layer.weight.shape[0]
        grad_bound = ERROR_BOUND * 128 * batch
        if max(128 * layer.weight_bound * features, ERROR_BOUND * layer.weight_bound * classes,
               grad_bound) > INT32_LIMIT:
            return super().head_step(layer, x, target, scale, divisor, decay_inv, propagate)
        updated_bound(layer.weight_bound, grad_bound, divisor, decay_inv)  # raises past int32
        yhat = np.empty((batch, classes), dtype=np.int8)
        input_grad = np.empty((batch, features), dtype=np.int32) if propagate else None
        layer.drop_copies()  # the kernel updates the weights in place
        squared_error, layer.weight_bound = _compiled.head_step(x, layer.weight, target, scale, divisor,
                                                                decay_inv, yhat, input_grad)
        return yhat, input_grad, squared_error

    def lookup_uint8(self, table: Any, x: Any) -> Any:
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or not x.flags.c_contiguous:
            return super().lookup_uint8(table, x)
        out = np.empty(x.shape, dtype=np.int8)
        _compiled.lookup_uint8(table, x.reshape(-1), out.reshape(-1))
        return out

    def dropout_mask(self, rng: np.random.Generator, shape: tuple[int, ...], keep_percent: int) -> np.ndarray:
        if not isinstance(rng, np.random.Generator) or not _draws_as_numpy():
            return super().dropout_mask(rng, shape, keep_percent)
        mask = np.empty(shape, dtype=np.bool_)
        _compiled.dropout_mask(rng.bit_generator, mask.reshape(-1), keep_percent)
        return mask

    def dropout_forward(self, dropout: Any, x: Any, mask: Any) -> Any:
        layout = _samples_positions_channels(x)
        if layout is None or not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != x.shape \
                or not mask.flags.c_contiguous or not 1 <= dropout.rescale < 2**23:
            return super().dropout_forward(dropout, x, mask)
        view, back = layout
        n, positions, channels = view.shape
        # both outputs: the pass fills one, and the other's memory is never touched
        out8, out16 = np.empty(view.shape, np.int8), np.empty(view.shape, np.int16)
        written = _compiled.dropout_apply(view, mask.reshape(n, channels, positions), dropout.rescale, out8, out16)
        return back(out8 if written == 8 else out16)

    def im2col(self, x: Any, kernel: int, padding: int) -> Any:
        n, c, h, w = x.shape
        rows, cols = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
        if not _channels_last_int8(x) or x.size == 0 or not 0 <= padding < kernel <= 64 or min(rows, cols) < 1:
            return super().im2col(x, kernel, padding)
        out = np.empty((n * rows * cols, kernel * kernel * c), dtype=np.int8)
        _compiled.im2col(x.transpose(0, 2, 3, 1), kernel, padding, out)
        return out

    def max_pool(self, pool: Any, x: Any) -> tuple[Any, Any]:
        (kh, kw), (ph, pw), (n, c, h, w) = pool.window, pool.padding, x.shape
        if not _channels_last_int8(x) or kh * kw > 256 or kh > h + 2 * ph or kw > w + 2 * pw or x.size == 0:
            return super().max_pool(pool, x)
        best = np.empty((n, (h + 2 * ph) // kh, (w + 2 * pw) // kw, c), dtype=np.int8)
        argmax = np.empty(best.shape, dtype=np.uint8)
        _compiled.max_pool(x.transpose(0, 2, 3, 1), kh, kw, best, argmax, ph, pw)
        return best.transpose(0, 3, 1, 2), argmax.transpose(0, 3, 1, 2)

    def max_pool_backward(self, pool: Any, delta: Any, argmax: Any, input_shape: tuple[int, ...]) -> Any:
        (kh, kw), (ph, pw), (n, c, h, w) = pool.window, pool.padding, input_shape
        rows_last = argmax.transpose(0, 2, 3, 1)
        if not isinstance(delta, np.ndarray) or delta.dtype != np.int32 or argmax.dtype != np.uint8 \
                or not rows_last.flags.c_contiguous or kh * kw > 256 \
                or argmax.shape != (n, c, (h + 2 * ph) // kh, (w + 2 * pw) // kw) or delta.shape != argmax.shape \
                or delta.size == 0:
            return super().max_pool_backward(pool, delta, argmax, input_shape)
        out = np.empty((n, h, w, c), dtype=np.int32)  # the kernel writes it whole, zeros on its threads
        _compiled.max_unpool(np.ascontiguousarray(delta.transpose(0, 2, 3, 1)), rows_last, kh, kw, out, ph, pw)
        return out.transpose(0, 3, 1, 2)


@functools.cache
def _draws_as_numpy() -> bool:
    """Whether the compiled dropout draw makes this NumPy's draws (``Generator.integers(0, 100,
    dtype=np.int8)``, whose method the C copies) and leaves the generator where NumPy does.
    Checked once; where NumPy has changed its method, dropout draws with NumPy."""
    for size, keep in [(1, 50), (6, 10), (1027, 50), (1027, 90)]:
        ours, numpys = np.random.default_rng(size), np.random.default_rng(size)
        mask = np.empty(size, dtype=np.uint8)
        _compiled.dropout_mask(ours.bit_generator, mask, keep)
        expected = numpys.integers(0, 100, size=size, dtype=np.int8) < keep
        if not np.array_equal(mask.view(np.bool_), expected) or ours.integers(2**62) != numpys.integers(2**62):
            return False
    return True


def _samples_positions_channels(x: Any) -> tuple[np.ndarray, Any] | None:
    """How the rows or maps ``x`` lie in memory, for dropout's compiled pass: ``(view, back)``,
    ``view`` being ``x`` as ``(n, positions, channels)`` in memory order (its logical order is
    ``(n, channels, positions)``) and ``back`` what turns an array of the view's shape into
    ``x``'s shape and layout; None unless ``x`` is a host int8 array in C order or a
    channels-last map."""
    if not isinstance(x, np.ndarray) or x.dtype != np.int8 or x.size == 0:
        return None
    if x.flags.c_contiguous:
        return x.reshape(len(x), -1, 1), lambda out: out.reshape(x.shape)
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
        n, c, h, w = x.shape
        return x.transpose(0, 2, 3, 1).reshape(n, h * w, c), lambda out: out.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return None


def _channels_last_int8(x: Any) -> bool:
    """Whether the map ``x`` is a host int8 array laid out ``(n, H, W, C)`` in memory."""
    return isinstance(x, np.ndarray) and x.dtype == np.int8 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def _divisors_fit(divisor: int, decay_inv: int) -> bool:
    """Whether an update's divisors suit the kernels' 32-bit division (``decay_inv`` 0: no decay)."""
    return 1 <= divisor < KERNEL_DIVISOR_LIMIT and 0 <= decay_inv < KERNEL_DIVISOR_LIMIT


def _scaled_in_kernel(kernel: Any, operands: tuple, shape: tuple[int, int], scale: int, table: Any) -> Any:
    """NITRO scaling (and the activation ``table``) that a product ``kernel`` applies to its
    sums as it makes them (in the vector lanes, or a block of rows at a time in cache):
    ``kernel(*operands, scale, scaled[, table, activated])``; no whole int32 z is written."""
    scaled = np.empty(shape, dtype=np.int8)
    if table is None:
        kernel(*operands, scale, scaled)
        return scaled
    activated = np.empty_like(scaled)
    kernel(*operands, scale, scaled, table, activated)
    return scaled, activated


def _scaled(product: np.ndarray, scale: int, table: Any) -> Any:
    """NITRO scaling (and the activation ``table``) of an exact product, int32 or float64."""
    scaled = np.empty(product.shape, dtype=np.int8)
    if table is None:
        _compiled.scale_to_int8(product.reshape(-1), scale, scaled.reshape(-1))
        return scaled
    activated = np.empty_like(scaled)
    _compiled.scale_to_int8(product.reshape(-1), scale, scaled.reshape(-1), table, activated.reshape(-1))
    return scaled, activated


class PairKernels(CompiledKernels):
    """The products of dense and conv layers on int16 pair instructions (``_pairs.h``).

    Wider integers travel as a pair of int16 that the instruction recombines: x as
    ``(x, 256 x)``, delta (and W, where needed) as ``(a & 255, a >> 8)``, ``|a| < 2**23``, one
    product per pair. The forward takes two products per pair instead, from x and W as plain
    int16: W's pair form saturates it to int16, and the few weights past that (its outliers:
    dozens of a first layer's 157k) are added back exactly. The kernels make x's forms from
    the int8 input in registers. int32 lanes wrap modulo ``2**32``, so a sum is exact
    whenever its true value fits int32, which these methods prove from L1 norms before each
    call.
    """

    def __init__(self, isa: str) -> None:
        self.name = isa

    def thread_pools(self) -> contextlib.AbstractContextManager:
        # The products run on the kernels' OpenMP threads; BLAS keeps only what falls outside
        # their proofs and stays on one thread: two pools whose idle threads spin on the same
        # cores made a 2-thread compact-CNN epoch 1.4x slower than 1 thread
        # (benchmarks/bench_kernels.py).
        return _SINGLE_THREADED_BLAS

    def scaled_forward(self, layer: Any, x: Any, scale: int, table: Any = None) -> Any:
        # When max_i sum_k |x[i, k]| * max|W| (of the pair form: at most 2**15) is below 2**31
        # one int32 sum covers a whole row; otherwise the kernel adds up chunks that fit in
        # int64 and saturates z to int32, which scaling cannot tell apart from z itself since
        # 128 * scale < 2**31.
        if not _host_int32(layer.weight) or layer.bias is not None or 128 * scale >= KERNEL_DIVISOR_LIMIT:
            return super().scaled_forward(layer, x, scale, table)
        digits = _int8_digits(x)
        if digits is not None and digits.shift > 0:
            product = self._digits_product(layer, digits.rows, digits.shift)
            return super().scaled_forward(layer, x, scale, table) if product is None \
                else _scaled(product, scale, table)
        if digits is not None:  # every value fits int8
            x = digits.rows
        if not _pair_input(x):
            return super().scaled_forward(layer, x, scale, table)
        (batch, width), outputs = x.shape, layer.weight.shape[0]
        pair_form = _pair_form(layer) if _pair_width(layer) else None
        if pair_form is not None:  # scaled a block of rows at a time: no whole z
            chunk = _chunk(x, min(layer.weight_bound, PAIR_LIMIT), 2, width // 2)
            return _scaled_in_kernel(_compiled.pairs_scaled_product, (self.name, x, pair_form.pairs, pair_form.index,
                                                                      pair_form.residual, pair_form.count, chunk),
                                     (batch, outputs), scale, table)
        chunk = 0 if layer.weight_bound >= UNITS_LIMIT else _chunk(x, layer.weight_bound, 1, width)
        if chunk == 0:
            return super().scaled_forward(layer, x, scale, table)
        if width < PAIR_MIN_WIDTH and chunk >= width:  # a narrow layer, whole rows in int32: no z at all
            return _scaled_in_kernel(_compiled.narrow_scaled_product, (self.name, x, _split_units(layer)),
                                     (batch, outputs), scale, table)
        product = np.empty((batch, outputs), dtype=np.int32)
        _compiled.units_product(self.name, x, _split_units(layer), chunk, product)
        return _scaled(product, scale, table)

    def _digits_product(self, layer: Any, digits: np.ndarray, shift: int) -> np.ndarray | None:
        """``x @ W.T`` for ``x`` given as its int8 digits (:func:`_int8_digits`), saturated to
        int32 as a pair product's z; None where no bound proves it exact.

        The low digits' part must be exact (their row L1 norms prove it); the high digits'
        part may saturate: then ``|z| >= 2**shift * 2**31 - 2**31 >= 2**31`` saturates too, with
        the high part's sign, which the sum of the parts keeps."""
        batch, width = digits.shape[0] // 2, digits.shape[1]
        low_l1 = _compiled.row_l1(digits[:batch])
        if low_l1 * layer.weight_bound > INT32_LIMIT:
            return None
        parts = np.empty((2 * batch, layer.weight.shape[0]), dtype=np.int32)
        pair_form = _pair_form(layer) if _pair_width(layer) else None
        if pair_form is not None:
            chunk = _chunk(digits, min(layer.weight_bound, PAIR_LIMIT), 2, width // 2)
            _compiled.pairs_product(self.name, digits, pair_form.pairs, pair_form.index, pair_form.residual,
                                    pair_form.count, chunk, parts)
        else:
            chunk = 0 if layer.weight_bound >= UNITS_LIMIT else _chunk(digits, layer.weight_bound, 1, width)
            if chunk == 0:
                return None
            _compiled.units_product(self.name, digits, _split_units(layer), chunk, parts)
        low, high = parts[:batch], parts[batch:]
        if (low_l1 + (_compiled.row_l1(digits[batch:]) << shift)) * layer.weight_bound <= INT32_LIMIT:
            np.left_shift(high, shift, out=high)  # z fits int32: so do the parts and their sum
            high += low
            return high
        z = high.astype(np.int64) << shift
        z += low
        return np.clip(z, -INT32_LIMIT - 1, INT32_LIMIT).astype(np.int32)

    def _digits_sgd_update(self, layer: Any, delta: np.ndarray, digits: Int8Digits, column_l1: int,
                           divisor: int, decay_inv: int, delta_bound: int | None) -> bool:
        """The update for ``x`` given as its int8 digits (:func:`_int8_digits`), and the largest
        column L1 norm of ``delta``: ``G = delta^T x = delta^T low + (2**shift delta)^T high``,
        the same update on the digits as the rows of a batch twice as long."""
        digits, shift = digits.rows, digits.shift
        largest = (abs_max(delta) if delta_bound is None else delta_bound) << shift
        if largest >= UNITS_LIMIT:
            return False
        if shift == 0:  # every value fits int8
            return self._sgd_update(layer, delta, digits, 128 * column_l1, divisor, decay_inv, largest)
        batch = delta.shape[0]
        stacked = np.empty((2 * batch, delta.shape[1]), dtype=np.int32)
        stacked[:batch] = delta
        np.left_shift(delta, shift, out=stacked[batch:])
        # low < 2**shift and |high| <= 128: a column of G sums at most (2**shift - 1 + 2**shift * 128)
        # times column_l1
        return self._sgd_update(layer, stacked, digits, (1 + (1 << shift)) * 128 * column_l1, divisor,
                                decay_inv, largest)

    def _sgd_update(self, layer: Any, delta: Any, x: Any, grad_bound: int, divisor: int, decay_inv: int,
                    delta_bound: int | None) -> bool:
        if _host_int32(delta) and delta.ndim == 2 and (digits := _int8_digits(x)) is not None:
            column_l1 = grad_bound // max(digits.bound, 1)  # grad_bound is max|x| times it
            return self._digits_sgd_update(layer, delta, digits, column_l1, divisor, decay_inv, delta_bound) \
                or super()._sgd_update(layer, delta, x, grad_bound, divisor, decay_inv, delta_bound)
        # delta's split units need max|delta| < UNITS_LIMIT: delta_bound proves it where known;
        # grad_bound / max|x| bounds max|delta| too (it is max|x| times a column L1 norm of
        # delta, or times max|delta| * batch), but a conv layer's column sums over every output
        # position soon pass UNITS_LIMIT while max|delta| stays far below
        largest = grad_bound // dtype_bound(x) if delta_bound is None else delta_bound
        if not _pair_input(x) or not _host_int32(delta) or delta.ndim != 2 or largest >= UNITS_LIMIT \
                or not _divisors_fit(divisor, decay_inv):
            return super()._sgd_update(layer, delta, x, grad_bound, divisor, decay_inv, delta_bound)
        # G may pass int32 (a conv layer's sums over every position of every image do on long
        # runs): the kernel then sums it in int64 where its int32 sums could overflow
        sums_fit = grad_bound <= INT32_LIMIT
        old = _copies(layer)
        if _pair_width(layer):  # the next forward reads the pair form
            # training reuses the last pair form's buffers: no other thread reads a model being fitted
            last = old.pairs
            pairs, index, residual = (_new_pair_buffers(layer.weight.shape) if last is None
                                      else (last.pairs, last.index, last.residual))
            layer.weight_bound, count = _compiled.units_sgd_update(
                self.name, delta, x, layer.weight, pairs, divisor, decay_inv, index, residual, sums_fit)
            layer.kernel_cache = LayerCopies(pairs=PairForm(pairs, index, residual, count))
            return True
        units = old.units if old.units is not None else np.empty_like(layer.weight)
        layer.weight_bound, _ = _compiled.units_sgd_update(self.name, delta, x, layer.weight, units, divisor,
                                                           decay_inv, sums_fit_int32=sums_fit)
        # past the units' range the copy is not valid
        layer.kernel_cache = LayerCopies(units=units if layer.weight_bound < UNITS_LIMIT else None)
        return True


class _SingleThreadedPool:
    """One thread pool (threadpoolctl's ``user_api``: "blas" or "openmp") limited to one
    thread while any epoch that asked for it runs: the first to enter sets the limit, the
    last to leave restores the user's (fits in several threads at once share one limit
    instead of restoring each other's). The libraries are found once, at the first epoch
    (NumPy's BLAS and the kernels' OpenMP are loaded by then): finding them takes
    milliseconds, as long as a small table's whole epoch."""

    def __init__(self, user_api: str) -> None:
        self._user_api = user_api
        self._lock = threading.Lock()
        self._users = 0
        self._controller: Any = None
        self._limits: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                if self._controller is None:
                    from threadpoolctl import ThreadpoolController

                    self._controller = ThreadpoolController()
                self._limits = self._controller.limit(limits=1, user_api=self._user_api)
            self._users += 1

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._limits.restore_original_limits()
                self._limits = None


_SINGLE_THREADED_BLAS = _SingleThreadedPool("blas")
_SINGLE_THREADED_OPENMP = _SingleThreadedPool("openmp")


def _pair_input(x: Any) -> bool:
    """Whether the pair products may take ``x`` (a host int8 matrix) as their input."""
    return (isinstance(x, np.ndarray) and x.dtype == np.int8 and x.ndim == 2 and x.size > 0
            and x.flags.c_contiguous)


class Int8Digits(NamedTuple):
    """An int16 matrix as int8 rows the pair products take (:func:`_int8_digits`)."""

    rows: np.ndarray
    shift: int
    bound: int  # max|x|, found on the way (the update's proofs read it)


def _int8_digits(x: Any) -> Int8Digits | None:
    """A host int16 matrix ``x`` (dropout's output past a rate of 0.25) as int8 digits, which
    the pair products take: ``x`` cast to int8 (shift 0) when every value fits, else the rows
    of ``x & (2**shift - 1)`` (in ``[0, 2**shift)``) and below them those of ``x >> shift``
    (``[-128, 127]``) for the smallest such ``shift``, so ``x = low + 2**shift * high``.
    None for anything else, or past ``shift`` 7 (``|x| >= 2**14``)."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.int16 and x.ndim == 2 and x.size
            and x.flags.c_contiguous):
        return None
    low, high = int(x.min()), int(x.max())
    shift = 0
    while high >> shift > 127 or low >> shift < -128:
        shift += 1
    if shift == 0:
        return Int8Digits(x.astype(np.int8), 0, max(-low, high))
    if shift > 7:
        return None
    batch = x.shape[0]
    digits = np.empty((2 * batch, x.shape[1]), dtype=np.int8)
    np.bitwise_and(x, (1 << shift) - 1, out=digits[:batch], casting="unsafe")
    np.right_shift(x, shift, out=digits[batch:], casting="unsafe")
    return Int8Digits(digits, shift, max(-low, high))


def _pair_width(layer: Any) -> bool:
    """Whether the forward reads ``layer``'s pair form: an even width of at least
    PAIR_MIN_WIDTH, and int32 flat indices for its outliers (else its split units)."""
    width = layer.weight.shape[1]
    return width % 2 == 0 and width >= PAIR_MIN_WIDTH and layer.weight.size <= INT32_LIMIT


def _new_pair_buffers(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (huge_page_empty(shape, np.int16), np.empty(OUTLIER_CAPACITY, np.int32),
            np.empty(OUTLIER_CAPACITY, np.int32))


HUGE_PAGE = 2**21  # x86-64's and aarch64's transparent huge page
HUGE_PAGE_MIN_BYTES = 2**17


def huge_page_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` on private anonymous memory aligned to, and advised for,
    transparent huge pages (``madvise(MADV_HUGEPAGE)``, where the platform has it; elsewhere,
    and for arrays under ``HUGE_PAGE_MIN_BYTES``, plain ``np.empty``). For the arrays a
    product streams many times per call, whose speed on 4 KiB pages depends on where those
    happen to lie in physical memory (see the design notes). At most one huge page is left
    unused."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE_MIN_BYTES or advice is None:
        return np.empty(shape, dtype)
    pages = -(-nbytes // HUGE_PAGE)
    try:  # private: mmap's default for anonymous memory is shared, which takes no huge pages
        region = mmap.mmap(-1, (pages + 1) * HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:  # no mapping to be had (a limit on mappings or address space): plain memory
        return np.empty(shape, dtype)
    memory = np.frombuffer(region, dtype=np.uint8)  # keeps the mapping alive
    start = -memory.ctypes.data % HUGE_PAGE
    with contextlib.suppress(OSError):  # advice only: a kernel without huge pages ignores it
        region.madvise(advice, start, pages * HUGE_PAGE)
    return memory[start:start + nbytes].view(dtype).reshape(shape)


def _pair_form(layer: Any) -> PairForm | None:
    """``layer``'s pair form, made (in new buffers, published whole) if missing; None when it
    has more outliers than it can hold."""
    pair_form = _copies(layer).pairs
    if pair_form is None:
        pairs, index, residual = _new_pair_buffers(layer.weight.shape)
        count = _compiled.pair_form(layer.weight, pairs, index, residual)
        pair_form = PairForm(pairs, index, residual, count)
        _publish(layer, pairs=pair_form)
    return pair_form if pair_form.count <= OUTLIER_CAPACITY else None


def _split_units(layer: Any) -> np.ndarray:
    """``layer``'s weights as split units, made (and published whole) if missing."""
    units = _copies(layer).units
    if units is None:
        units = np.empty_like(layer.weight)
        _compiled.split_units(layer.weight, units)
        _publish(layer, units=units)
    return units


def _chunk(x: np.ndarray, weight_bound: int, products_per_unit: int, units: int) -> int:
    """Units per int32 partial sum of ``x @ W.T``: all of them when ``max_i sum_k |x[i, k]| *
    max|W|`` fits int32 (the factor bound first, the row L1 norms only when it does not), else
    as many whole vectors (16 units) as ``max|x| * max|W|`` per product allows (0: none)."""
    width = x.shape[1]
    if 128 * width * weight_bound <= INT32_LIMIT or _compiled.row_l1(x) * weight_bound <= INT32_LIMIT:
        return units
    return INT32_LIMIT // (products_per_unit * 128 * weight_bound) // 16 * 16


# -- selection --------------------------------------------------------------------------

NUMPY = NumpyKernels()
IMPLEMENTATIONS: dict[str, NumpyKernels] = {"numpy": NUMPY}
if _compiled is not None:
    IMPLEMENTATIONS["c"] = CompiledKernels()
    for _isa in reversed(_compiled.pair_isas()):  # fastest last: "auto" takes the last
        IMPLEMENTATIONS[_isa] = PairKernels(_isa)
AVAILABLE = tuple(IMPLEMENTATIONS)  # slowest first
BEST = AVAILABLE[-1]


def select() -> NumpyKernels:
    """The kernels to use now: the fastest this CPU runs, or the one the settings pin."""
    name = kernels_setting()
    return IMPLEMENTATIONS[BEST if name == "auto" else name]
