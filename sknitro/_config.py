"""Global settings of sknitro, in the style of :func:`sklearn.config_context`.

``kernels`` chooses the implementation of the training step's kernels
(:mod:`sknitro.nn.kernels`):

``"auto"`` (default)
    the fastest this CPU runs: ``"vnni"`` (AVX-512 VNNI), else ``"avx2"``, else ``"c"``
    (where the package was built with a C compiler), else ``"numpy"``;
``"numpy"``
    the reference: NumPy (or CuPy) arithmetic, products through :func:`exact_matmul`;
``"c"``
    products on float64 BLAS (proven exact), the passes around them fused in portable C;
``"avx2"``, ``"vnni"``
    the dense and convolution products on int16 pair instructions.

``gemm`` chooses how the ``"numpy"`` kernels multiply matrices:

``"auto"`` (default)
    exact products through float64 BLAS whenever a bound proves every partial sum is an
    exactly representable integer (algorithm.md §9), the pure integer kernel otherwise;
``"integer"``
    always the pure integer kernel (int64 accumulation, no float array anywhere); it pins
    ``kernels="numpy"``.

``fused_kernels=False`` pins ``kernels="numpy"`` too. Every setting gives the same integers;
only the speed differs.

The settings are per thread, as scikit-learn's are: :func:`set_config` and
:func:`config_context` change them for the calling thread only. A context does not reach the
threads that run inside it (joblib's threading backend, a thread pool, a web server's
workers): each of those starts from the defaults, so enter the context in the function the
thread runs. The compiled kernels' own threads (OpenMP) follow ``OMP_NUM_THREADS`` and
threadpoolctl instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_GEMM_KERNELS = ("auto", "integer")
_KERNELS = ("auto", "numpy", "c", "avx2", "vnni")
_DEFAULTS = {"kernels": "auto", "gemm": "auto", "fused_kernels": True}
_local = threading.local()


def _settings() -> dict:
    if not hasattr(_local, "settings"):
        _local.settings = dict(_DEFAULTS)
    return _local.settings


def gemm_kernel() -> str:
    """The current GEMM kernel (a fast accessor for the engine's hot path)."""
    return _settings()["gemm"]


def kernels_setting() -> str:
    """The kernels the settings ask for: ``"auto"``, or the name of one implementation."""
    settings = _settings()
    if not settings["fused_kernels"] or settings["gemm"] != "auto":
        return "numpy"
    return settings["kernels"]


def get_config() -> dict:
    """Return a copy of the current settings.

    Returns
    -------
    config : dict
        ``{"kernels": str, "gemm": "auto" | "integer", "fused_kernels": bool}``.
    """
    return dict(_settings())


def set_config(kernels: str | None = None, gemm: str | None = None, fused_kernels: bool | None = None) -> None:
    """Change the settings of this thread.

    Parameters
    ----------
    kernels : {"auto", "numpy", "c", "avx2", "vnni"}, default=None
        Implementation of the training step's kernels. ``None`` leaves it unchanged.
    gemm : {"auto", "integer"}, default=None
        Kernel for integer matrix products. ``None`` leaves it unchanged.
    fused_kernels : bool, default=None
        Whether the CPU training step may use the compiled kernels (False: ``"numpy"``).
        ``None`` leaves it unchanged.

    Raises
    ------
    ValueError
        If a setting is unknown, or ``kernels`` names an implementation this machine cannot
        run (not built, or not supported by the CPU).
    """
    if kernels is not None:
        from .nn.kernels import AVAILABLE  # the engine imports this module: import it late

        if kernels not in _KERNELS:
            raise ValueError(f"kernels must be one of {_KERNELS}, got {kernels!r}")
        if kernels != "auto" and kernels not in AVAILABLE:
            raise ValueError(f"kernels={kernels!r} cannot run here: this machine runs {AVAILABLE}")
        _settings()["kernels"] = kernels
    if gemm is not None:
        if gemm not in _GEMM_KERNELS:
            raise ValueError(f"gemm must be one of {_GEMM_KERNELS}, got {gemm!r}")
        _settings()["gemm"] = gemm
    if fused_kernels is not None:
        if not isinstance(fused_kernels, bool):
            raise TypeError(f"fused_kernels must be a bool, got {fused_kernels!r}")
        _settings()["fused_kernels"] = fused_kernels


@contextmanager
def config_context(*, kernels: str | None = None, gemm: str | None = None,
                   fused_kernels: bool | None = None) -> Iterator[None]:
    """Temporarily change the settings inside a ``with`` block, for the calling thread.

    Threads started inside the block (joblib's threading backend, thread pools) do not see
    the change: enter the context inside the function each thread runs.

    Parameters
    ----------
    kernels : {"auto", "numpy", "c", "avx2", "vnni"}, default=None
        Implementation of the training step's kernels inside the block.
    gemm : {"auto", "integer"}, default=None
        Kernel for integer matrix products inside the block.
    fused_kernels : bool, default=None
        Whether the CPU training step may use the compiled kernels inside the block.

    Examples
    --------
    >>> import sknitro
    >>> with sknitro.config_context(gemm="integer"):
    ...     sknitro.get_config()["gemm"]
    'integer'
    >>> with sknitro.config_context(kernels="numpy"):
    ...     sknitro.get_config()["kernels"]
    'numpy'
    """
    old = get_config()
    set_config(kernels=kernels, gemm=gemm, fused_kernels=fused_kernels)
    try:
        yield
    finally:
        set_config(**old)
