"""Integer primitives of algorithm.md §1: truncated division, saturation, integer sqrt.

All functions work on NumPy and CuPy arrays alike (they only use array methods and
operators) and never create a float array.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

INT8_MAX = 127


def tdiv(a: Any, d: int) -> Any:
    """Integer division rounded toward zero (C semantics), ``a / d`` truncated.

    NumPy's ``//`` floors (``-7 // 4 == -2``); ``tdiv(-7, 4) == -1``.

    Parameters
    ----------
    a : integer array
    d : int
        Non-zero divisor.

    Returns
    -------
    q : integer array
        Same dtype as ``a`` (int64 when ``|d|`` does not fit that dtype).
    """
    d = int(d)
    if d == 0:
        raise ZeroDivisionError("tdiv by zero")
    if d < 0:
        return -tdiv(a, -d)
    if d == 1:
        return a.copy()
    bits, signed, max_value = _int_info(a.dtype)
    if d > max_value:
        a = a.astype(np.int64)
        bits, signed = 64, True
    if not signed:
        return a // d
    # For a < 0 adding d - 1 before flooring turns floor into ceil, i.e. truncation; the
    # mask (a >> bits-1) is all ones exactly for negative a, so this never overflows.
    q = a >> (bits - 1)
    q &= d - 1
    q += a
    q //= d
    return q


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
