"""Checks of the state an engine object is loaded with (pickle, joblib, skops).

A model file is untrusted input: a crafted one must not set what the engine relies on for
safety. So every engine class restores only the attributes it expects, checks each one's
type, dtype, shape and range here, and recomputes what is derived (weight bounds, activation
tables, kernel caches) instead of reading it from the file. A file that does not fit raises
:class:`InvalidModelError` naming the attribute.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

INT64_MAX = 2**63 - 1


class InvalidModelError(ValueError):
    """A saved model holds a value that no sknitro model can have."""


def checked_state(state: Any, owner: str, required: Iterable[str], derived: Iterable[str] = ()) -> dict:
    """``state`` restricted to ``required`` (all present, nothing unknown); ``derived``
    attributes are recomputed by the class, so they are dropped whatever they hold."""
    if not isinstance(state, dict):
        raise InvalidModelError(f"{owner}: the saved state must be a dict, got {type(state).__name__}")
    required, derived = set(required), set(derived)
    missing, unknown = required - state.keys(), state.keys() - required - derived
    if missing or unknown:
        raise InvalidModelError(f"{owner}: the saved state lacks {sorted(missing)} or has unknown "
                                f"attributes {sorted(map(str, unknown))}")
    return {key: state[key] for key in required}


def check_int(value: Any, name: str, low: int, high: int = INT64_MAX) -> int:
    """``value`` as a Python int in ``[low, high]`` (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise InvalidModelError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def check_shape(value: Any, name: str, ndim: int, low: int = 1, high: int = 2**31 - 1) -> tuple[int, ...]:
    """A tuple of ``ndim`` integers in ``[low, high]``."""
    if not isinstance(value, (tuple, list)) or len(value) != ndim:
        raise InvalidModelError(f"{name} must be {ndim} integers, got {value!r}")
    return tuple(check_int(v, name, low, high) for v in value)


def check_array(value: Any, name: str, dtype: Any, shape: tuple[int, ...]) -> Any:
    """A C-contiguous array of exactly ``dtype`` and ``shape`` (a copy when needed): a NumPy
    array, or a CuPy one (``IntegerNetwork.to`` copies a network onto the GPU)."""
    is_array = isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__")
    if not is_array or value.dtype != np.dtype(dtype) or value.shape != tuple(shape):
        got = f"{value.dtype} {value.shape}" if is_array else type(value).__name__
        raise InvalidModelError(f"{name} must be a {np.dtype(dtype)} array of shape {tuple(shape)}, got {got}")
    return np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value


def check_instance(value: Any, name: str, types: type | tuple[type, ...]) -> Any:
    if not isinstance(value, types):
        expected = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise InvalidModelError(f"{name} must be a {expected}, got {type(value).__name__}")
    return value


__all__ = ["InvalidModelError", "check_array", "check_instance", "check_int", "check_shape", "checked_state"]
