"""Array backends (NumPy on the CPU, CuPy on a GPU) and the exact integer GEMM.

Every integer matrix product of the engine goes through :func:`exact_matmul`. NumPy has no
BLAS for integer types, so on the default ``"auto"`` kernel the product runs on float64
BLAS *when a bound proves it exact*: a product of integers is computed exactly in float64
as long as every partial sum stays below ``2**53``, which holds when
``max|A| * max|B| * K < 2**53`` for an ``(M, K) @ (K, N)`` product (algorithm.md §9). The
result is converted straight back to int64: it is the integer product, bit for bit.
Otherwise, or under ``config_context(gemm="integer")``, the product runs on the pure
integer kernel (int64 accumulation), which refuses products that could overflow int64.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ._config import gemm_kernel

FLOAT64_EXACT_LIMIT = 2**53
INT32_LIMIT = 2**31 - 1
INT64_LIMIT = 2**63 - 1

DEVICES = ("cpu", "cuda")


def get_namespace(device: str) -> ModuleType:
    """Return the array module for ``device``.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        ``"cpu"`` runs on NumPy; ``"cuda"`` on CuPy and the first GPU.

    Returns
    -------
    xp : module
        ``numpy`` or ``cupy``.

    Raises
    ------
    ValueError
        If ``device`` is unknown, or is ``"cuda"`` on a machine where CuPy is not
        installed or sees no GPU.
    """
    if device == "cpu":
        return np
    if device != "cuda":
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    try:
        import cupy
    except ImportError as exc:
        raise ValueError(
            "device='cuda' needs CuPy, which is not installed: "
            "pip install 'sknitro[cuda]' (cupy-cuda12x), or use device='cpu'"
        ) from exc
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise ValueError(f"device='cuda' but no usable GPU was found ({exc}); use device='cpu'") from exc
    if n_gpus == 0:
        raise ValueError("device='cuda' but no GPU was found; use device='cpu'")
    return cupy


def array_namespace(a: Any) -> ModuleType:
    """Return the module (numpy or cupy) that owns array ``a``."""
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def to_host(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array (a no-op for NumPy arrays)."""
    if isinstance(a, np.ndarray):
        return a
    return a.get()


def to_namespace(a: np.ndarray, xp: ModuleType) -> Any:
    """Move a host array to the device of ``xp`` (a no-op for NumPy)."""
    return a if xp is np else xp.asarray(a)


def abs_max(a: Any) -> int:
    """Largest absolute value of an integer array, as a Python int (0 when empty)."""
    if a.size == 0:
        return 0
    return max(int(a.max()), -int(a.min()))


def dtype_bound(a: Any) -> int:
    """``max|a|``: 128 for int8/uint8 arrays without a pass over them, computed otherwise."""
    if a.dtype.itemsize == 1:
        return 256 if a.dtype.kind == "u" else 128
    return abs_max(a)


def float64_product(a: Any, b: Any, b_float64: Any = None) -> Any:
    """``a @ b`` on float64 BLAS, for integer operands whose product a bound proves exact.

    The caller owns the proof (every partial sum below ``2**53``). ``b_float64``, when
    given, is a float64 copy of ``b`` that the caller keeps in step with it.
    """
    xp = array_namespace(a)
    return xp.matmul(a.astype(xp.float64), b.astype(xp.float64) if b_float64 is None else b_float64)


def exact_matmul(a: Any, b: Any, bound_a: int | None = None, bound_b: int | None = None, *,
                 sum_bound: int | None = None, b_float64: Any = None) -> Any:
    """Exact integer matrix product ``a @ b`` (int32 or int64, see Returns).

    Parameters
    ----------
    a : integer array of shape (M, K)
    b : integer array of shape (K, N)
    bound_a, bound_b : int, default=None
        Known upper bounds of ``max|a|`` and ``max|b|``. When omitted they are computed
        (one pass over the array); callers that track a bound pass it to save that pass.
    sum_bound : int, default=None
        A proven bound of ``sum_k |a[i, k] * b[k, j]|`` for every output entry, hence of
        every partial sum in any order of summation. When given, it replaces the factor
        bound ``max|a| * max|b| * K``; a tighter bound (from L1 norms, say) keeps more
        products on the fast path and their results in int32.
    b_float64 : float64 array, default=None
        A float64 copy of ``b`` kept by the caller (a layer's weights), used by the float64
        path instead of converting ``b`` again.

    Returns
    -------
    c : int32 or int64 array of shape (M, N)
        The exact integer product, whatever kernel computed it; int32 when the bound
        proves it fits (cheaper for everything downstream), int64 otherwise.

    Raises
    ------
    OverflowError
        If the bound does not rule out an int64 overflow.
    """
    if sum_bound is not None:
        worst = sum_bound
    else:
        if bound_a is None:
            bound_a = dtype_bound(a)
        if bound_b is None:
            bound_b = dtype_bound(b)
        worst = bound_a * bound_b * a.shape[-1]  # Python ints: no overflow here
    xp = array_namespace(a)
    out_dtype = xp.int32 if worst <= INT32_LIMIT else xp.int64
    if worst < FLOAT64_EXACT_LIMIT and gemm_kernel() == "auto":
        return float64_product(a, b, b_float64).astype(out_dtype)
    if worst > INT64_LIMIT:
        raise OverflowError(f"integer product may overflow int64: bound {worst}, K={a.shape[-1]}")
    product = xp.matmul(a.astype(xp.int64, copy=False), b.astype(xp.int64, copy=False))
    return product.astype(out_dtype, copy=False)
