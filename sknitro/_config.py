"""Global settings of sknitro, in the style of :func:`sklearn.config_context`.

``gemm`` chooses the kernel of integer matrix products:

``"auto"`` (default)
    exact products through float64 BLAS whenever a bound proves every partial sum is an
    exactly representable integer (algorithm.md §9), the pure integer kernel otherwise;
``"integer"``
    always the pure integer kernel (int64 accumulation, no float array anywhere).

Both give bit-identical results; ``"integer"`` is slower and exists so that users (and the
tests) can check that claim.

``fused_kernels`` (default ``True``) lets the CPU training step of dense layers use the
compiled kernels of ``sknitro._fused`` (built with the package when a C compiler is there),
which fuse the scaling, activation and update passes around the float64 products. They
give bit-identical weights too; they are off under ``gemm="integer"`` and on the GPU.

The settings are per thread, as scikit-learn's are: :func:`set_config` and
:func:`config_context` change them for the calling thread only. A context does not reach the
threads that run inside it (joblib's threading backend, a thread pool, a web server's
workers): each of those starts from the defaults, so enter the context in the function the
thread runs. Every setting gives the same integers; only the speed differs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_GEMM_KERNELS = ("auto", "integer")
_DEFAULTS = {"gemm": "auto", "fused_kernels": True}
_local = threading.local()


def _settings() -> dict:
    if not hasattr(_local, "settings"):
        _local.settings = dict(_DEFAULTS)
    return _local.settings


def gemm_kernel() -> str:
    """The current GEMM kernel (a fast accessor for the engine's hot path)."""
    return _settings()["gemm"]


def fused_kernels_allowed() -> bool:
    """Whether the compiled fused kernels may run (a fast accessor for the hot path)."""
    settings = _settings()
    return settings["fused_kernels"] and settings["gemm"] == "auto"


def get_config() -> dict:
    """Return a copy of the current settings.

    Returns
    -------
    config : dict
        ``{"gemm": "auto" | "integer", "fused_kernels": bool}``.
    """
    return dict(_settings())


def set_config(gemm: str | None = None, fused_kernels: bool | None = None) -> None:
    """Change the settings of this thread.

    Parameters
    ----------
    gemm : {"auto", "integer"}, default=None
        Kernel for integer matrix products. ``None`` leaves it unchanged.
    fused_kernels : bool, default=None
        Whether the CPU training step may use the compiled fused kernels. ``None`` leaves
        it unchanged.
    """
    if gemm is not None:
        if gemm not in _GEMM_KERNELS:
            raise ValueError(f"gemm must be one of {_GEMM_KERNELS}, got {gemm!r}")
        _settings()["gemm"] = gemm
    if fused_kernels is not None:
        if not isinstance(fused_kernels, bool):
            raise TypeError(f"fused_kernels must be a bool, got {fused_kernels!r}")
        _settings()["fused_kernels"] = fused_kernels


@contextmanager
def config_context(*, gemm: str | None = None, fused_kernels: bool | None = None) -> Iterator[None]:
    """Temporarily change the settings inside a ``with`` block, for the calling thread.

    Threads started inside the block (joblib's threading backend, thread pools) do not see
    the change: enter the context inside the function each thread runs.

    Parameters
    ----------
    gemm : {"auto", "integer"}, default=None
        Kernel for integer matrix products inside the block.
    fused_kernels : bool, default=None
        Whether the CPU training step may use the compiled fused kernels inside the block.

    Examples
    --------
    >>> import sknitro
    >>> with sknitro.config_context(gemm="integer"):
    ...     sknitro.get_config()["gemm"]
    'integer'
    """
    old = get_config()
    set_config(gemm=gemm, fused_kernels=fused_kernels)
    try:
        yield
    finally:
        set_config(**old)
