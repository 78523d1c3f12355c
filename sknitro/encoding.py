"""The input boundary: user features become int8 here, and only here (algorithm.md §2).

Two fitted encoders, both a mean-absolute-deviation (MAD) standardisation that maps
``mean ± 1.25 MAD`` (about one standard deviation) to ``±64``, saturating at ``±127``:

- integer input (uint8 images and any integer features) is encoded with integer
  arithmetic only: ``x' = clip(tdiv((x - mean) * 51, mad), -127, 127)`` with
  ``mean = tdiv(sum(x), n)`` and ``mad = tdiv(sum(|x - mean|), n)``. uint8 images are first
  shifted by -128 and share one mean/MAD per channel; other integer features get one per
  feature;
- float features use the same formula in float64, per feature, and round the result
  (a feature's MAD is floored at half the mean MAD of all features): this is the one
  place where sknitro touches a float, before training starts.

Everything after the boundary (training and inference) is integer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .nn.functional import INT8_MAX, tdiv, to_int8

MAD_SCALE = 51  # 64 / 1.25: MAD ≈ 0.8 std, so a standard deviation maps to ±64
MAD_FLOOR_FRACTION = 0.5
_CHUNK_ROWS = 2048  # encode in chunks: wide intermediates of a whole data set are large


class InputEncoder:
    """Fitted int8 encoder of an estimator's input.

    Parameters
    ----------
    channel_axis : int or None
        For uint8 images: the axis holding channels (statistics are shared by every pixel of
        a channel). ``None`` treats all pixels as one channel.

    Attributes
    ----------
    kind : {"image", "integer", "float"}
        The rule chosen from the dtype seen in :meth:`fit`.
    mean, mad : arrays
        Per-channel or per-feature statistics (integer for "image" and "integer").
    """

    def __init__(self, channel_axis: int | None = None) -> None:
        self.channel_axis = channel_axis

    def fit(self, X: np.ndarray) -> InputEncoder:
        if X.dtype == np.uint8:
            self.kind = "image"
            X = X.astype(np.int16) - 128
            axes = tuple(a for a in range(X.ndim) if a != self.channel_axis)
        elif X.dtype.kind in "iu":
            self.kind = "integer"
            axes = (0,)
        else:
            self.kind = "float"
            self.mean = X.mean(axis=0)
            mad = np.abs(X - self.mean).mean(axis=0)
            # Floor each MAD at half the mean MAD of the non-constant features: a nearly
            # constant feature (a rare pixel, a column of outliers) would otherwise be
            # amplified into saturated noise. A constant feature encodes to 0.
            varying = mad[mad > 0]
            floor = MAD_FLOOR_FRACTION * varying.mean() if varying.size else 1.0
            self.mad = np.maximum(mad, floor)
            return self
        self.mean, self.mad = _integer_mean_mad(X, axes)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Encode ``X`` to int8 in ``[-127, 127]`` (same shape)."""
        out = np.empty(X.shape, dtype=np.int8)
        for start in range(0, X.shape[0], _CHUNK_ROWS):
            out[start:start + _CHUNK_ROWS] = self._transform_chunk(X[start:start + _CHUNK_ROWS])
        return out

    def _transform_chunk(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "float":
            scaled = np.rint((X - self.mean) * (MAD_SCALE / self.mad))
            return np.clip(scaled, -INT8_MAX, INT8_MAX).astype(np.int8)
        if self.kind == "image":  # |x - 128 - mean| * 51 < 2**31: int32 is enough
            X = X.astype(np.int32) - 128
        else:
            X = X.astype(np.int64)
        return to_int8(tdiv((X - self.mean) * MAD_SCALE, self.mad))


def _integer_mean_mad(X: np.ndarray, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """Integer mean and MAD over ``axes`` (kept as size-1 dims for broadcasting)."""
    n = int(np.prod([X.shape[a] for a in axes]))
    mean = tdiv(X.sum(axis=axes, dtype=np.int64, keepdims=True), n)
    abs_dev = np.zeros_like(mean)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        chunk = X[start:start + _CHUNK_ROWS].astype(np.int64)
        abs_dev += np.abs(chunk - mean).sum(axis=axes, dtype=np.int64, keepdims=True)
    mad = tdiv(abs_dev, n)
    return mean[0], np.maximum(mad, 1)[0]  # drop the sample axis; MAD 0 -> 1: no division by 0
