"""Integer data augmentation for images (algorithm.md §7): per-sample random crop after
padding with the encoding of a black pixel, and random horizontal flip, each with
probability 0.5. Offsets and coin flips are drawn on the host, so runs are reproducible
bit for bit on every device."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_namespace, to_namespace


def random_crop_flip(x: Any, rng: np.random.Generator, padding: int, black: Any) -> Any:
    """Augment a batch ``(n, C, H, W)`` of int8 images, each sample on its own.

    Parameters
    ----------
    x : int8 array (n, C, H, W)
    rng : numpy Generator
    padding : int
        Crop offsets range over ``[-padding, padding]`` pixels in each direction.
    black : int8 array (C,)
        The encoding of a black pixel in each channel (what the padding shows).
    """
    xp = array_namespace(x)
    n, c, h, w = x.shape
    p = padding
    canvas = xp.empty((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype)
    canvas[...] = black.reshape(1, c, 1, 1)
    canvas[:, :, p:p + h, p:p + w] = x
    crop = rng.random(n) < 0.5
    offsets = np.where(crop[:, None], rng.integers(0, 2 * p + 1, size=(n, 2)), p)
    flip = rng.random(n) < 0.5
    rows = offsets[:, :1] + np.arange(h)
    cols = offsets[:, 1:] + np.arange(w)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    index = (np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :])
    return canvas[tuple(to_namespace(i, xp) for i in index)]
