"""Integer primitives of algorithm.md §1: truncated division, saturation, integer sqrt.

All functions work on NumPy and CuPy arrays alike (they only use array methods and
operators) and never create a float array.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..backend import array_namespace

INT8_MAX = 127


def tdiv(a: Any, d: Any) -> Any:
    """Integer division rounded toward zero (C semantics), ``a / d`` truncated.

    NumPy's ``//`` floors (``-7 // 4 == -2``); ``tdiv(-7, 4) == -1``.

    Parameters
    ----------
    a : integer array (or Python int)
    d : int or integer array broadcastable against ``a``
        Divisor; never 0.

    Returns
    -------
    q : integer array
        For a positive scalar divisor, the dtype of ``a`` (int64 when ``d`` does not fit
        that dtype) -- the engine's hot path. Otherwise int64.
    """
    if not hasattr(a, "dtype"):
        a = np.asarray(a, dtype=np.int64)
    if hasattr(d, "ndim") and d.ndim > 0:
        return _tdiv_by_array(a, d)
    d = int(d)
    if d == 0:
        raise ZeroDivisionError("tdiv by zero")
    if d < 0:  # in int64, so that -(-128) or a negated uint8 cannot wrap
        return -tdiv(a.astype(np.int64), -d)
    if d == 1:
        return a.copy()
    bits, signed, max_value = _int_info(a.dtype)
    if d > max_value:
        a = a.astype(np.int64)
        bits, signed = 64, True
    power_of_two = d & (d - 1) == 0  # then a shift floors ~5x faster than a division
    if not signed:
        return a >> (d.bit_length() - 1) if power_of_two else a // d
    # For a < 0 adding d - 1 before flooring turns floor into ceil, i.e. truncation; the
    # mask (a >> bits-1) is all ones exactly for negative a, so this never overflows.
    q = a >> (bits - 1)
    q &= d - 1
    q += a
    if power_of_two:
        q >>= d.bit_length() - 1
    else:
        q //= d
    return q


def _tdiv_by_array(a: Any, d: Any) -> Any:
    """``tdiv`` with an array divisor, in int64."""
    a, d = a.astype(np.int64), d.astype(np.int64)
    if (d > 0).all():  # the fast form of the scalar case, elementwise
        return (a + ((a >> 63) & (d - 1))) // d
    if not (d != 0).all():
        raise ZeroDivisionError("tdiv by zero")
    q = abs(a) // abs(d)  # magnitudes floor-divided, then the sign put back
    return q * (1 - 2 * ((a < 0) ^ (d < 0)))


@functools.cache
def _int_info(dtype: Any) -> tuple[int, bool, int]:
    info = np.iinfo(dtype)
    return info.bits, info.min < 0, int(info.max)


def clip(a: Any, lo: int, hi: int) -> Any:
    """Saturate ``a`` to ``[lo, hi]`` (same dtype)."""
    return a.clip(lo, hi)


def to_int8(a: Any) -> Any:
    """Saturate to ``[-127, 127]`` and store as int8 (the activation type)."""
    return a.clip(-INT8_MAX, INT8_MAX).astype(np.int8)


def isqrt(n: int) -> int:
    """Integer square root (floor), for non-negative Python ints."""
    return math.isqrt(int(n))


def im2col(x: Any, kernel: int = 3, padding: int = 1) -> Any:
    """Patches of a batch of images as rows: ``(n, C, H, W) -> (n * H_out * W_out, k * k * C)``.

    Zero padding, stride 1; columns are ordered ``(kernel row, kernel column, channel)``, the
    order of ``W.transpose(0, 2, 3, 1).reshape(F, -1)``. The image is moved to channels-last
    first, so the copy gathers runs of ``C`` contiguous values; no Python loop over pixels
    or channels.
    """
    xp = array_namespace(x)
    n, c, h, w = x.shape
    x = x.transpose(0, 2, 3, 1)
    if padding:
        x = xp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    else:
        x = xp.ascontiguousarray(x)
    h_out, w_out = x.shape[1] - kernel + 1, x.shape[2] - kernel + 1
    s0, s1, s2, s3 = x.strides
    windows = xp.lib.stride_tricks.as_strided(
        x, shape=(n, h_out, w_out, kernel, kernel, c), strides=(s0, s1, s2, s1, s2, s3))
    return windows.reshape(n * h_out * w_out, kernel * kernel * c)

