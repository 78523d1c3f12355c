"""A stand-in for CuPy, backed by NumPy, that keeps CuPy's rules about host and device arrays.

``device="cuda"`` has to work on CuPy without ever touching a GPU in most of the places this
project is tested. The stand-in runs the engine's CuPy path on the CPU and refuses, as CuPy
does, every use of a device array that only works on NumPy:

- no implicit conversion to NumPy (``np.asarray(a)``, the buffer protocol, a C kernel's
  typed memoryview): ``a.get()`` or ``cupy.asnumpy(a)`` only;
- no NumPy array among the operands of a device operation (``a + host``, ``cupy.take(host, a)``,
  ``np.concatenate([a, host])``): "Unsupported type", as CuPy raises;
- reductions return 0-d device arrays, never NumPy scalars;
- ``isinstance(a, np.ndarray)`` is false.

Indices and assigned values may be NumPy arrays (CuPy copies them to the device). The
integers are NumPy's, so a fit on the stand-in must give the CPU's weights bit for bit.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np


class ndarray:  # noqa: N801 (CuPy's name)
    """A device array: a NumPy array that only device operations may read."""

    __slots__ = ("_host",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, host: np.ndarray):
        self._host = host

    # -- no implicit transfer to the host
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self) -> np.ndarray:
        return self._host.copy()

    # -- the attributes of an array; any method runs on the device and returns device arrays
    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    ndim = property(lambda self: self._host.ndim)
    size = property(lambda self: self._host.size)
    strides = property(lambda self: self._host.strides)
    itemsize = property(lambda self: self._host.itemsize)
    nbytes = property(lambda self: self._host.nbytes)
    flags = property(lambda self: self._host.flags)
    T = property(lambda self: ndarray(self._host.T))

    @property
    def __cuda_array_interface__(self) -> dict:  # the mark of a CUDA array (no usable pointer here)
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (0, False), "version": 3}

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("data", "ctypes", "base"):
            raise AttributeError(f"the CuPy stand-in does not give {name!r}")
        attribute = getattr(self._host, name)
        if not callable(attribute):
            return _to_device(attribute)
        return lambda *args, **kwargs: _to_device(attribute(*_on_device(args), **_on_device(kwargs)))

    def __getitem__(self, key):
        return _to_device(self._host[_index(key)])

    def __setitem__(self, key, value):
        self._host[_index(key)] = value._host if isinstance(value, ndarray) else value

    def __len__(self) -> int:
        return len(self._host)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        return bool(self._host)

    def __int__(self) -> int:
        return int(self._host)

    def __float__(self) -> float:
        return float(self._host)

    def __format__(self, spec: str) -> str:
        return format(self._host, spec)

    def __repr__(self) -> str:
        return f"array({self._host!r}) on the CuPy stand-in"

    def __reduce__(self):
        return _from_host, (self._host,)

    # -- NumPy's functions and ufuncs on device arrays run on the device (NEP 13, NEP 18)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*_on_device(inputs), **_on_device(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _to_device(result)

    def __array_function__(self, func, types, args, kwargs):
        return _to_device(func(*_on_device(args), **_on_device(kwargs)))


def _operator(ufunc, reflected=False, in_place=False):
    if in_place:
        def apply(self, other):
            ufunc(self, other, out=(self,))
            return self
    elif reflected:
        def apply(self, other):
            return ufunc(other, self)
    else:
        def apply(self, other):
            return ufunc(self, other)
    return apply


for _name, _ufunc in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("matmul", np.matmul),
                      ("truediv", np.true_divide), ("floordiv", np.floor_divide), ("mod", np.remainder),
                      ("pow", np.power), ("lshift", np.left_shift), ("rshift", np.right_shift),
                      ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor)]:
    setattr(ndarray, f"__{_name}__", _operator(_ufunc))
    setattr(ndarray, f"__r{_name}__", _operator(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_name}__", _operator(_ufunc, in_place=True))
for _name, _ufunc in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                      ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(ndarray, f"__{_name}__", _operator(_ufunc))
for _name, _ufunc in [("neg", np.negative), ("pos", np.positive), ("abs", np.absolute),
                      ("invert", np.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _ufunc=_ufunc: _ufunc(self))
ndarray.__module__ = "cupy"


def _on_device(value: Any) -> Any:
    """The NumPy arrays inside a device array (in lists, tuples and dicts); refuses host arrays."""
    if isinstance(value, ndarray):
        return value._host
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)}")
    if isinstance(value, (list, tuple)):
        return type(value)(_on_device(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_device(v) for k, v in value.items()}
    return value


def _to_device(value: Any) -> Any:
    """NumPy results as device arrays (a NumPy scalar as a 0-d array, as CuPy returns)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return ndarray(np.asarray(value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v) for v in value)
    return value


def _index(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key._host if isinstance(key, ndarray) else key


def _from_host(host: np.ndarray) -> ndarray:
    return ndarray(np.array(host))


_from_host.__module__ = "cupy"


def asarray(a: Any, dtype: Any = None) -> ndarray:
    """To the device (a host array is copied; a device array is returned as it is)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return ndarray(np.array(a, dtype=dtype))


def asnumpy(a: Any) -> np.ndarray:
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*arrays: Any) -> types.ModuleType:
    return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in arrays) else np


def _device_function(function):
    def on_device(*args, **kwargs):
        return _to_device(function(*_on_device(args), **_on_device(kwargs)))
    on_device.__name__ = function.__name__
    return on_device


def module() -> types.ModuleType:
    """A new ``cupy`` module: the stand-in, to put in ``sys.modules``."""
    cupy = types.ModuleType("cupy", __doc__)
    cupy.ndarray = ndarray
    cupy.asarray = asarray
    cupy.array = lambda a, dtype=None: ndarray(np.array(_index(a), dtype=dtype))  # a copy, from either side
    cupy.asnumpy = asnumpy
    cupy.get_array_module = get_array_module
    cupy._from_host = _from_host
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    cupy.lib = types.SimpleNamespace(
        stride_tricks=types.SimpleNamespace(as_strided=_device_function(np.lib.stride_tricks.as_strided)))

    def __getattr__(name: str):
        if name.startswith("__") or name == "random":
            raise AttributeError(f"the CuPy stand-in has no {name!r}")
        value = getattr(np, name)  # AttributeError for what NumPy lacks too
        if isinstance(value, (type, types.ModuleType)) or not callable(value):  # dtypes, constants
            return value
        return _device_function(value)

    cupy.__getattr__ = __getattr__
    return cupy
