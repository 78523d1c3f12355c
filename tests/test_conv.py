"""Spatial layers against direct loop implementations (exact integers), and the §4/§5 rules."""

import numpy as np
import pytest

from sknitro.nn.conv import AvgPool2d, IntegerConv2d, MaxPool2d, conv_amp, head_pool_window
from sknitro.nn.functional import im2col


def loop_conv(x, W):
    n, c, h, w = x.shape
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, W.shape[0], h, w), dtype=np.int64)
    for b in range(n):
        for f in range(W.shape[0]):
            for i in range(h):
                for j in range(w):
                    out[b, f, i, j] = (padded[b, :, i:i + 3, j:j + 3] * W[f]).sum()
    return out


def loop_conv_weight_grad(x, delta, k=3):
    n, c, h, w = x.shape
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    grad = np.zeros((delta.shape[1], c, k, k), dtype=np.int64)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                grad += delta[b, :, i, j][:, None, None, None] * padded[b, None, :, i:i + k, j:j + k]
    return grad


def loop_pool(x, kh, kw, kind):
    n, c, h, w = x.shape
    ho, wo = -(-h // kh), -(-w // kw)
    out = np.zeros((n, c, ho, wo), dtype=np.int64)
    arg = np.zeros((n, c, ho, wo, 2), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    best, where, total = None, None, 0
                    for di in range(kh):
                        for dj in range(kw):
                            r, s = i * kh + di, j * kw + dj
                            v = int(x[b, ch, r, s]) if r < h and s < w else (-128 if kind == "max" else 0)
                            total += v
                            if best is None or v > best:  # first one on ties
                                best, where = v, (r, s)
                    out[b, ch, i, j] = best if kind == "max" else int(total / (kh * kw))
                    arg[b, ch, i, j] = where
    return out, arg


SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 2, 4, 4), (2, 4, 3, 6)]


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_forward_and_weight_grad_match_loops(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    conv = IntegerConv2d(shape[1], 5, 40, rng)
    z, patches = conv.forward(x)
    np.testing.assert_array_equal(z, loop_conv(x, conv.weight.astype(np.int64)))
    assert patches.shape == (shape[0] * shape[2] * shape[3], shape[1] * 9)
    delta = rng.integers(-5000, 5000, size=z.shape).astype(np.int32)
    grad, bound = conv.weight_grad(delta, patches)
    expected = loop_conv_weight_grad(x, delta)
    np.testing.assert_array_equal(grad, expected)
    assert bound >= np.abs(expected).max()


def test_im2col_rows_are_zero_padded_patches():
    x = np.arange(1, 10, dtype=np.int8).reshape(1, 1, 3, 3)
    cols = im2col(x)
    # top-left output pixel: the 3×3 patch centred on x[0, 0], zero outside the image
    np.testing.assert_array_equal(cols[0], [0, 0, 0, 0, 1, 2, 0, 4, 5])
    np.testing.assert_array_equal(cols[4], np.arange(1, 10))  # the centre pixel sees everything


@pytest.mark.parametrize("shape, window", [((2, 3, 5, 7), (2, 2)), ((1, 2, 4, 4), (2, 2)),
                                           ((2, 1, 3, 3), (2, 1)), ((1, 2, 6, 5), (4, 2)),
                                           ((1, 1, 1, 1), (2, 2))])
def test_max_pool_matches_loops(shape, window):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    x.flat[::3] = -128  # ties and the minimum value: padding must never win
    pool = MaxPool2d(window)
    out, argmax = pool.forward(x)
    expected, where = loop_pool(x, *window, "max")
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int8
    delta = rng.integers(-1000, 1000, size=out.shape).astype(np.int32)
    back = pool.backward(delta, argmax, x.shape)
    routed = np.zeros(x.shape, dtype=np.int64)
    for idx in np.ndindex(out.shape):
        r, s = where[idx]
        routed[idx[0], idx[1], r, s] += delta[idx]
    np.testing.assert_array_equal(back, routed)


@pytest.mark.parametrize("shape, window", [((2, 3, 5, 7), (2, 2)), ((1, 2, 6, 5), (4, 2)), ((1, 1, 1, 1), (2, 2))])
def test_avg_pool_matches_loops(shape, window):
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    pool = AvgPool2d(window)
    out, _ = pool.forward(x)
    expected, _ = loop_pool(x, *window, "avg")
    np.testing.assert_array_equal(out, expected)
    delta = rng.integers(-1000, 1000, size=out.shape).astype(np.int32)
    back = pool.backward(delta, None, x.shape)
    size = window[0] * window[1]
    for r, s in np.ndindex(shape[2], shape[3]):
        share = np.trunc(delta[:, :, r // window[0], s // window[1]] / size).astype(np.int64)
        np.testing.assert_array_equal(back[:, :, r, s], share)


def test_head_pool_window_rule():
    # 128 channels on 32×32, head_dim 4096: (2,1) (2,2) (4,2) (4,4) (8,4) -> 128*4*8 = 4096
    assert head_pool_window(128, 32, 32, 4096) == (8, 4)
    assert head_pool_window(512, 2, 2, 4096) == (1, 1)  # already small enough
    assert head_pool_window(64, 7, 7, 2048) == (2, 1)  # 64*4*7 = 1792
    assert head_pool_window(10000, 2, 2, 16) == (2, 2)  # cannot do better than the whole map


def test_conv_amp_adjustment():
    # 640 × (32*32) // (8*4) = 640 × 32
    assert conv_amp(640, 32, 32, (8, 4)) == 640 * 32
    assert conv_amp(640, 2, 2, (4, 4)) == 640
