"""The compiled fused kernels of the CPU training step, and the bounds that let them run.

On the CPU the big products of a dense step run on float64 BLAS (algorithm.md §9). What
surrounds them is elementwise work over arrays as large as the weights -- converting the
gradient back to integers, dividing it (four passes for a truncated division), updating the
weights, scanning them for ``max|W|``, converting them to float64 for the next product --
and in NumPy each of those is one pass over memory. ``sknitro._fused`` (C, built with the
package) does the whole IntegerSGD update of a layer in one pass:
``W -= tdiv(G, lr_inv * amp) + tdiv(W, decay_inv)`` straight from the float64 product
``G``, keeping a float64 copy of ``W`` (the next forward product's operand) and returning
``max|W|``.

The kernels compute exactly what the NumPy path computes; they run only when a bound proves
that every integer fits their 32-bit arithmetic, and otherwise the NumPy path does the
work. They are off under ``config_context(gemm="integer")`` or ``fused_kernels=False``,
on the GPU, and where the package was built without a C compiler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._config import fused_kernels_allowed
from ..backend import INT32_LIMIT, float64_product

try:
    from .. import _fused as _kernels
except ImportError:  # built without a C compiler: the NumPy path does the same work
    _kernels = None

AVAILABLE = _kernels is not None
KERNEL_DIVISOR_LIMIT = 2**31  # divisors of the 32-bit multiply-and-shift division


def active(weight: Any) -> bool:
    """Whether the fused kernels may update ``weight`` (a host int32 array) now."""
    return (_kernels is not None and isinstance(weight, np.ndarray) and weight.dtype == np.int32
            and weight.flags.c_contiguous and fused_kernels_allowed())


def sgd_update(layer: Any, delta: Any, x: Any, grad_bound: int, new_bound: int, divisor: int,
               decay_inv: int) -> bool:
    """IntegerSGD on ``layer.weight`` with ``G = delta.T @ x``, fused; False if it cannot run.

    ``grad_bound`` bounds ``max|G|`` and ``new_bound`` the updated ``max|W|`` (both proven
    by the caller). The kernel needs ``|G| < 2**31`` and divisors below ``2**31``; the
    product is exact in float64 far beyond that. On success ``layer.weight_bound`` and the
    float64 copy ``layer.weight64`` are up to date.
    """
    if grad_bound > INT32_LIMIT or new_bound > INT32_LIMIT or not 1 <= divisor < KERNEL_DIVISOR_LIMIT \
            or not 0 <= decay_inv < KERNEL_DIVISOR_LIMIT:
        return False
    grad = float64_product(delta.T, x)
    if layer.weight64 is None:
        layer.weight64 = np.empty(layer.weight.shape, dtype=np.float64)
    layer.weight_bound = _kernels.sgd_update(layer.weight, grad, divisor, decay_inv, layer.weight64)
    return True
