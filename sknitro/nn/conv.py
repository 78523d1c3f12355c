"""Spatial integer layers of algorithm.md §3: IntegerConv2d (3×3, stride 1, padding 1),
MaxPool2d and AvgPool2d, and the learning-head pooling rule of §4.

Images are ``(batch, channels, height, width)``. Convolution is im2col + a dense layer;
pooling windows tile the map after padding (with -128 for max pooling, so padding never
wins; with 0 for average pooling).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..backend import array_namespace, to_namespace
from . import graph, kernels
from .functional import tdiv
from .init import integer_uniform
from .layers import IntegerLinear
from .state import InvalidModelError, check_array, check_int, check_shape, checked_state

INT8_MIN = -128


class IntegerConv2d:
    """3×3 convolution, stride 1, zero padding 1, int32 weights ``(F, C, 3, 3)``, no bias.

    A convolution is a dense layer on the im2col patches: the weights live in ``linear``, an
    :class:`~.layers.IntegerLinear` of shape ``(F, 3 * 3 * C)`` in the patches' column order,
    so that every kernel of the dense layers (:mod:`.kernels`) runs the conv products too.
    ``weight`` is the ``(F, C, 3, 3)`` view of it. ``forward`` returns the pre-activation and
    the patches, which the update reuses (the input gradient of a conv layer is never needed:
    blocks do not propagate).
    """

    kernel = 3
    padding = 1

    def __init__(self, in_channels: int, out_channels: int, init_bound: int,
                 rng: np.random.Generator, xp: Any = np) -> None:
        self.in_channels = in_channels
        self.out_channels = out_channels
        shape = (out_channels, in_channels, self.kernel, self.kernel)
        self.bias = None
        self.weight = to_namespace(integer_uniform(rng, init_bound, shape), xp)

    @property
    def weight(self) -> Any:
        """The weights as ``(F, C, 3, 3)``: a view of ``linear.weight``."""
        return self.linear.weight.reshape(self.out_channels, self.kernel, self.kernel, -1).transpose(0, 3, 1, 2)

    @weight.setter
    def weight(self, value: Any) -> None:
        xp = array_namespace(value)
        rows = xp.ascontiguousarray(value.transpose(0, 2, 3, 1).reshape(self.out_channels, -1))
        self.linear = IntegerLinear.from_weight(rows)

    @property
    def weight_bound(self) -> int:
        return self.linear.weight_bound

    def refresh_bounds(self) -> None:
        self.linear.refresh_bounds()

    def drop_copies(self) -> None:
        self.linear.drop_copies()

    def __getstate__(self) -> dict:  # the file format keeps (F, C, 3, 3) weights
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "weight": array_namespace(self.linear.weight).ascontiguousarray(self.weight), "bias": None}

    def __deepcopy__(self, memo: dict) -> IntegerConv2d:
        # the live layer, attribute by attribute, not through the (F, C, 3, 3) file state: the
        # copy's weights are then `linear`'s, which a memo may already map to another device
        # (IntegerNetwork.to)
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return copied

    def __setstate__(self, state: dict) -> None:
        # a model file sets the weights only: the bound is recomputed (see .state)
        state = checked_state(state, "IntegerConv2d", ("in_channels", "out_channels", "weight", "bias"),
                              derived=("weight_bound", "bias_bound"))
        c_in = check_int(state["in_channels"], "IntegerConv2d.in_channels", 1, 2**31 - 1)
        c_out = check_int(state["out_channels"], "IntegerConv2d.out_channels", 1, 2**31 - 1)
        if state["bias"] is not None:
            raise InvalidModelError("IntegerConv2d.bias must be None")
        self.in_channels, self.out_channels, self.bias = c_in, c_out, None
        self.weight = check_array(state["weight"], "IntegerConv2d.weight", np.int32,
                                  (c_out, c_in, self.kernel, self.kernel))

    def _to_map(self, rows: Any, n: int, h: int, w: int) -> Any:
        """Rows ``(n*H*W, F)`` (one per output position) as a map ``(n, F, H, W)``."""
        return rows.reshape(n, h, w, self.out_channels).transpose(0, 3, 1, 2)

    def to_rows(self, delta: Any) -> Any:
        """A map ``(n, F, H, W)`` as contiguous rows ``(n*H*W, F)``, the products' layout."""
        return array_namespace(delta).ascontiguousarray(delta.transpose(0, 2, 3, 1)).reshape(-1, self.out_channels)

    def forward(self, x: Any, patches: Any = None) -> tuple[Any, Any]:
        """``z`` of shape ``(n, F, H, W)`` and the patches ``(n*H*W, C*9)`` of ``x``."""
        if patches is None:
            patches = kernels.select().im2col(x, self.kernel, self.padding)
        return self._to_map(self.linear.forward(patches), *self._map_size(x)), patches

    def _map_size(self, x: Any) -> tuple[int, int, int]:
        n, _, h, w = x.shape
        return n, h, w

    def scaled_activated_forward(self, x: Any, scale: int, activation: Any) -> tuple[Any, Any, Any]:
        """NITRO scaling of the conv as rows ``(n*H*W, F)`` (what the backward reads), its
        activation as a map ``(n, F, H, W)``, and the patches."""
        patches = kernels.select().im2col(x, self.kernel, self.padding)
        pre_activation, activated = self.linear.scaled_activated_forward(patches, scale, activation)
        return pre_activation, self._to_map(activated, *self._map_size(x)), patches

    def weight_grad(self, delta: Any, patches: Any) -> tuple[Any, int]:
        """``G`` of the weights' shape from ``delta (n, F, H, W)``, and a bound of ``max|G|``."""
        # |G[f, k]| <= max|patch| * sum_i |delta[i, f]|: the largest column L1 norm of delta
        # bounds G far tighter than max|delta| * max|patch| * rows (rows: every position of
        # the batch), which keeps the update's overflow proof from refusing sound steps
        grad, bound = self.linear.weight_grad(self.to_rows(delta), patches)
        return grad.reshape(self.out_channels, self.kernel, self.kernel, -1).transpose(0, 3, 1, 2), bound


def _pad_and_crop(x: Any, window: tuple[int, int], padding: tuple[int, int], fill: int) -> Any:
    """Pad ``padding`` rows (columns) on both sides of the map, then keep the rows (columns)
    that whole windows cover: floor mode, as the published network's pooling. The padded map
    keeps the channels-last memory of the conv layers' output (see :func:`_channels_last`)."""
    xp = array_namespace(x)
    (kh, kw), (ph, pw) = window, padding
    if ph or pw:
        x = xp.pad(x.transpose(0, 2, 3, 1), ((0, 0), (ph, ph), (pw, pw), (0, 0)),
                   constant_values=fill).transpose(0, 3, 1, 2)
    return x[:, :, :x.shape[2] // kh * kh, :x.shape[3] // kw * kw]


def pooled_size(size: int, window: int, padding: int = 0) -> int:
    """Output length of a floor-mode pooling: ``(size + 2 * padding - window) // window + 1``."""
    return (size + 2 * padding - window) // window + 1


def _window_positions(window: tuple[int, int]):
    """``(k, index)`` for each position of the window, ``index`` selecting that position of
    every window at once (a strided view): pooling loops over window positions, never pixels."""
    kh, kw = window
    for di in range(kh):
        for dj in range(kw):
            yield di * kw + dj, (slice(None), slice(None), slice(di, None, kh), slice(dj, None, kw))


def _channels_last(xp: Any, shape: tuple[int, int, int, int], dtype: Any) -> Any:
    """Zeros of the map shape ``(n, C, H, W)`` laid out in memory as ``(n, H, W, C)``.

    The conv layers' products are rows, one per position (``(n, H, W, C)`` in memory), and
    their maps are views of those rows; pooling keeps that memory layout in both directions,
    so that no step of a conv network transposes a whole map.
    """
    n, c, h, w = shape
    return xp.zeros((n, h, w, c), dtype=dtype).transpose(0, 3, 1, 2)


def _in_channels_last(x: Any) -> Any:
    """``x`` (a map) with channels-last memory, copied only if it is not laid out so."""
    if x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return x
    out = _channels_last(array_namespace(x), x.shape, x.dtype)
    out[...] = x
    return out


class _Pool2d:
    """Pooling with stride = window, ``padding`` rows and columns on both sides, floor mode.

    Results keep their input's memory layout (channels-last for the conv maps)."""

    kind = ""  # "max" or "avg", in the network's graph

    def __init__(self, window: tuple[int, int], padding: tuple[int, int] = (0, 0)) -> None:
        self.window = tuple(int(k) for k in window)
        self.padding = tuple(int(p) for p in padding)

    def __setstate__(self, state: dict) -> None:
        name = type(self).__name__
        state = checked_state(state, name, ("window", "padding"))
        window = check_shape(state["window"], f"{name}.window", 2, 1, 2**16)
        padding = check_shape(state["padding"], f"{name}.padding", 2, 0, 2**16)
        if any(p >= k for p, k in zip(padding, window)):
            raise InvalidModelError(f"{name}.padding {padding} must be smaller than the window {window}")
        self.__init__(window, padding)

    def output_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        return (channels, pooled_size(height, self.window[0], self.padding[0]),
                pooled_size(width, self.window[1], self.padding[1]))

    def describe(self, input_shape: tuple[int, int, int]) -> graph.Pool:
        """This pooling, on maps of ``input_shape``, in the network's graph."""
        return graph.Pool(self.kind, self.window, self.padding, tuple(input_shape), self.output_shape(*input_shape))

    def _spread(self, values_at: Any, delta: Any, input_shape: tuple[int, ...]) -> Any:
        """The map of ``input_shape`` with ``values_at(k)`` at window position ``k`` of every
        window; padding and the rows (columns) no window covers receive 0."""
        xp = array_namespace(delta)
        n, c, h, w = input_shape
        (kh, kw), (ph, pw) = self.window, self.padding
        out = _channels_last(xp, (n, c, h + 2 * ph, w + 2 * pw), delta.dtype)
        covered = out[:, :, :delta.shape[2] * kh, :delta.shape[3] * kw]
        for k, index in _window_positions(self.window):
            covered[index] = values_at(k)
        return out[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_Pool2d):
    """Window maximum; padding (the map dtype's minimum) never wins; backward routes
    ``delta`` to the first arg-max of each window."""

    kind = "max"

    def forward(self, x: Any) -> tuple[Any, Any]:
        """Pooled map and the arg-max position of each window (for backward)."""
        return kernels.select().max_pool(self, x)

    def backward(self, delta: Any, argmax: Any, input_shape: tuple[int, ...]) -> Any:
        return kernels.select().max_pool_backward(self, delta, argmax, input_shape)

    def reference_forward(self, x: Any) -> tuple[Any, Any]:
        """:meth:`forward` in NumPy (or CuPy): the rule the compiled kernels are held to."""
        xp = array_namespace(x)
        fill = int(np.iinfo(x.dtype).min) if x.dtype.kind in "iu" else INT8_MIN
        x = _pad_and_crop(x, self.window, self.padding, fill)
        index_dtype = np.uint8 if self.window[0] * self.window[1] <= 256 else np.uint16
        best = argmax = None
        for k, index in _window_positions(self.window):
            values = x[index]
            if best is None:
                best, argmax = values.copy(order="K"), xp.zeros_like(values, dtype=index_dtype)
                continue
            better = (values > best).view(np.uint8)  # strictly: the first maximum wins ties
            xp.maximum(best, values, out=best)
            # argmax = k where better, in plain arithmetic (a masked where() is ~5x slower);
            # unsigned wrap-around in (k - argmax) cancels exactly
            argmax += better * (index_dtype(k) - argmax)
        return best, argmax

    def reference_backward(self, delta: Any, argmax: Any, input_shape: tuple[int, ...]) -> Any:
        """:meth:`backward` in NumPy (or CuPy)."""
        delta = _in_channels_last(delta)  # as argmax (the map's layout): elementwise products stay contiguous
        return self._spread(lambda k: delta * (argmax == k), delta, input_shape)


class AvgPool2d(_Pool2d):
    """``tdiv(window sum, kh * kw)``, padding counts as 0; backward spreads ``tdiv(delta, kh * kw)``."""

    kind = "avg"

    @property
    def size(self) -> int:
        return self.window[0] * self.window[1]

    def forward(self, x: Any) -> tuple[Any, None]:
        x = _pad_and_crop(x, self.window, self.padding, 0)
        total = None
        for _, index in _window_positions(self.window):
            total = x[index].astype(np.int32) if total is None else total + x[index]
        return tdiv(total, self.size).astype(x.dtype), None

    def backward(self, delta: Any, _: Any, input_shape: tuple[int, ...]) -> Any:
        share = tdiv(_in_channels_last(delta), self.size)
        return self._spread(lambda k: share, share, input_shape)


def head_pool_window(channels: int, height: int, width: int, head_dim: int) -> tuple[int, int]:
    """The learning head's pooling window (§4): from (1, 1), double the height window, then
    the width window, alternately, while ``channels * ceil(H/kh) * ceil(W/kw) > head_dim``
    (a window stops growing once it covers its side of the map)."""
    kh = kw = 1
    grow_height = True
    while channels * -(-height // kh) * -(-width // kw) > head_dim and (kh < height or kw < width):
        if grow_height and kh < height or kw >= width:
            kh *= 2
        else:
            kw *= 2
        grow_height = not grow_height
    return kh, kw


def head_pool_padding(height: int, width: int, window: tuple[int, int]) -> tuple[int, int]:
    """Rows (columns) the head's pool pads on *both* sides (§4):
    ``(k * (ceil(d / k) - d // k)) // 2`` for each side ``d`` and window ``k``."""
    return tuple((k * (-(-d // k) - d // k)) // 2 for d, k in zip((height, width), window))


def head_pool(kind: str, channels: int, height: int, width: int, head_dim: int) -> MaxPool2d | AvgPool2d:
    """The pooling of a conv block's learning head, for the block's ``(channels, H, W)`` output."""
    window = head_pool_window(channels, height, width, head_dim)
    cls = {"max": MaxPool2d, "avg": AvgPool2d}[kind]
    return cls(window, head_pool_padding(height, width, window))
