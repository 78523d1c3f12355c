"""Spatial integer layers of algorithm.md §3: IntegerConv2d (3×3, stride 1, padding 1),
MaxPool2d and AvgPool2d, and the learning-head pooling rule of §4.

Images are ``(batch, channels, height, width)``. Convolution is im2col + the exact GEMM;
pooling windows tile the map after padding (with -128 for max pooling, so padding never
wins; with 0 for average pooling).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import abs_max, array_namespace, dtype_bound, exact_matmul, to_namespace
from .functional import im2col, tdiv
from .init import integer_uniform

INT8_MIN = -128


class IntegerConv2d:
    """3×3 convolution, stride 1, zero padding 1, int32 weights ``(F, C, 3, 3)``, no bias.

    ``forward`` returns the pre-activation and the im2col patches, which ``weight_grad``
    reuses (the input gradient of a conv layer is never needed: blocks do not propagate).
    """

    kernel = 3
    padding = 1

    def __init__(self, in_channels: int, out_channels: int, init_bound: int,
                 rng: np.random.Generator, xp: Any = np) -> None:
        self.in_channels = in_channels
        self.out_channels = out_channels
        shape = (out_channels, in_channels, self.kernel, self.kernel)
        self.weight = to_namespace(integer_uniform(rng, init_bound, shape), xp)
        self.bias = None
        self.refresh_bounds()

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel * self.kernel

    def refresh_bounds(self) -> None:
        self.weight_bound = abs_max(self.weight)
        self.bias_bound = 0

    def forward(self, x: Any) -> tuple[Any, Any]:
        """``z`` of shape ``(n, F, H, W)`` and the patches ``(n*H*W, C*9)`` of ``x``."""
        n, _, h, w = x.shape
        patches = im2col(x, self.kernel, self.padding)
        z = exact_matmul(patches, self._weight_rows().T, bound_b=self.weight_bound)
        return z.reshape(n, h, w, self.out_channels).transpose(0, 3, 1, 2), patches

    def _weight_rows(self) -> Any:
        """Weights as ``(F, k * k * C)`` in the column order of :func:`im2col`."""
        return self.weight.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)

    def weight_grad(self, delta: Any, patches: Any) -> tuple[Any, int]:
        """``G`` of the weights' shape from ``delta (n, F, H, W)``, and a bound of ``max|G|``."""
        rows = delta.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
        delta_bound, patch_bound = dtype_bound(rows), dtype_bound(patches)
        grad = exact_matmul(rows.T, patches, delta_bound, patch_bound)
        f, c, kh, kw = self.weight.shape
        grad = grad.reshape(f, kh, kw, c).transpose(0, 3, 1, 2)  # back to the weights' layout
        return grad, delta_bound * patch_bound * rows.shape[0]


def _tile(x: Any, window: tuple[int, int], fill: int) -> Any:
    """Pad the map so the windows tile it; view as ``(n, C, H', W', kh * kw)``."""
    xp = array_namespace(x)
    kh, kw = window
    n, c, h, w = x.shape
    ph, pw = -h % kh, -w % kw
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), constant_values=fill)
    ho, wo = x.shape[2] // kh, x.shape[3] // kw
    return x.reshape(n, c, ho, kh, wo, kw).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho, wo, kh * kw)


def _untile(windows: Any, window: tuple[int, int], shape: tuple[int, ...]) -> Any:
    """Inverse of ``_tile``: back to ``shape``, dropping the padding."""
    kh, kw = window
    n, c, ho, wo, _ = windows.shape
    full = windows.reshape(n, c, ho, wo, kh, kw).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho * kh, wo * kw)
    return full[:, :, :shape[2], :shape[3]]


class MaxPool2d:
    """Window maximum (stride = window); backward routes ``delta`` to the first arg-max."""

    def __init__(self, window: tuple[int, int]) -> None:
        self.window = tuple(window)

    def forward(self, x: Any) -> tuple[Any, Any]:
        """Pooled map and the arg-max of each window (for backward)."""
        windows = _tile(x, self.window, INT8_MIN)
        argmax = windows.argmax(axis=-1)
        return windows.max(axis=-1), argmax

    def backward(self, delta: Any, argmax: Any, input_shape: tuple[int, ...]) -> Any:
        xp = array_namespace(delta)
        size = self.window[0] * self.window[1]
        windows = xp.zeros(delta.size * size, dtype=delta.dtype)
        # scatter: window i receives delta[i] at its arg-max position, zeros elsewhere
        windows[xp.arange(delta.size) * size + argmax.ravel()] = delta.ravel()
        return _untile(windows.reshape(*delta.shape, size), self.window, input_shape)


class AvgPool2d:
    """``tdiv(window sum, kh * kw)``, padding counts as 0; backward spreads ``tdiv(delta, kh * kw)``."""

    def __init__(self, window: tuple[int, int]) -> None:
        self.window = tuple(window)

    @property
    def size(self) -> int:
        return self.window[0] * self.window[1]

    def forward(self, x: Any) -> tuple[Any, None]:
        windows = _tile(x, self.window, 0)
        return tdiv(windows.sum(axis=-1, dtype=np.int32), self.size).astype(x.dtype), None

    def backward(self, delta: Any, _: Any, input_shape: tuple[int, ...]) -> Any:
        xp = array_namespace(delta)
        share = tdiv(delta, self.size)
        windows = xp.broadcast_to(share[..., None], share.shape + (self.size,))
        return _untile(windows, self.window, input_shape)


def head_pool_window(channels: int, height: int, width: int, head_dim: int) -> tuple[int, int]:
    """The learning head's pooling window (§4): from (1, 1), double the height window, then
    the width window, alternately, until ``channels * ceil(H/kh) * ceil(W/kw) <= head_dim``
    (a window never grows past the map)."""
    kh = kw = 1
    grow_height = True
    while channels * -(-height // kh) * -(-width // kw) > head_dim:
        if grow_height and kh < height or kw >= width:
            kh *= 2
        else:
            kw *= 2
        grow_height = not grow_height
        if kh >= height and kw >= width:
            break
    return kh, kw


def conv_amp(lr_amp: int, height: int, width: int, window: tuple[int, int]) -> int:
    """§5: a conv block's amplification times ``(H_out * W_out) // (kh * kw)``."""
    return lr_amp * max((height * width) // (window[0] * window[1]), 1)
