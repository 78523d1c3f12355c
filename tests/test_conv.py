"""Spatial layers against direct loop implementations (exact integers), and the §4/§5 rules."""

import numpy as np
import pytest

from sknitro.nn.conv import AvgPool2d, IntegerConv2d, MaxPool2d, head_pool, head_pool_padding, head_pool_window
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


def loop_pool(x, kh, kw, kind, ph=0, pw=0):
    """Pooling by loops: windows of kh×kw at stride (kh, kw) over the map padded by ph rows
    and pw columns on both sides, floor mode; returns the map and each window's arg-max."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // kh + 1, (w + 2 * pw - kw) // kw + 1
    out = np.zeros((n, c, ho, wo), dtype=np.int64)
    arg = np.zeros((n, c, ho, wo, 2), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    best, where, total = None, None, 0
                    for di in range(kh):
                        for dj in range(kw):
                            r, s = i * kh + di - ph, j * kw + dj - pw
                            inside = 0 <= r < h and 0 <= s < w
                            v = int(x[b, ch, r, s]) if inside else (-128 if kind == "max" else 0)
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
    assert patches.shape == (shape[0] * shape[2] * shape[3], 9 * shape[1])
    delta = rng.integers(-5000, 5000, size=z.shape).astype(np.int32)
    grad, bound = conv.weight_grad(delta, patches)
    expected = loop_conv_weight_grad(x, delta)
    np.testing.assert_array_equal(grad, expected)
    # the bound: max|x| (128 for int8) times the largest column L1 norm of delta over positions
    column_l1 = np.abs(delta.astype(np.int64)).sum(axis=(0, 2, 3)).max()
    assert bound == 128 * column_l1 >= np.abs(expected).max()


def test_im2col_rows_are_zero_padded_patches():
    x = np.arange(1, 10, dtype=np.int8).reshape(1, 1, 3, 3)
    cols = im2col(x)
    # top-left output pixel: the 3×3 patch centred on x[0, 0], zero outside the image
    np.testing.assert_array_equal(cols[0], [0, 0, 0, 0, 1, 2, 0, 4, 5])
    np.testing.assert_array_equal(cols[4], np.arange(1, 10))  # the centre pixel sees everything
    # two channels: columns ordered (kernel row, kernel column, channel)
    two = np.stack([x[0, 0], -x[0, 0]])[None]
    np.testing.assert_array_equal(im2col(two)[4], np.stack([np.arange(1, 10), -np.arange(1, 10)], 1).ravel())


@pytest.mark.parametrize("shape, window, padding, values", [
    ((2, 3, 5, 7), (2, 2), (0, 0), (-128, 128)),  # floor mode: the last row and column are dropped
    ((1, 2, 4, 4), (2, 2), (0, 0), (-128, 128)),
    ((2, 1, 3, 3), (2, 1), (1, 0), (-128, 128)),  # a head window on a 3×3 map (§4): one row each side
    ((1, 2, 6, 5), (4, 2), (2, 1), (-128, 128)),
    ((1, 1, 28, 28), (8, 4), (4, 0), (-128, 128)),  # the first head of the published CNN at 28×28
    ((1, 1, 1, 1), (2, 2), (1, 1), (-128, 128)),  # a window larger than the map
    ((2, 3, 8, 8), (2, 2), (0, 0), (-2, 3)),  # few distinct values: tied maxima everywhere
    ((1, 2, 17, 18), (17, 18), (0, 0), (-128, 128)),  # more window positions than uint8 can index
    ((1, 2, 17, 18), (17, 18), (0, 0), (-2, 3)),
])
def test_max_pool_matches_loops(shape, window, padding, values):
    rng = np.random.default_rng(1)
    x = rng.integers(*values, size=shape).astype(np.int8)
    x.flat[::3] = -128  # ties and the minimum value: padding must never win
    pool = MaxPool2d(window, padding)
    out, argmax = pool.forward(x)
    expected, where = loop_pool(x, *window, "max", *padding)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int8 and pool.output_shape(*shape[1:]) == out.shape[1:]
    delta = rng.integers(-1000, 1000, size=out.shape).astype(np.int32)
    back = pool.backward(delta, argmax, x.shape)
    routed = np.zeros(x.shape, dtype=np.int64)
    for idx in np.ndindex(out.shape):
        r, s = where[idx]
        if 0 <= r < shape[2] and 0 <= s < shape[3]:  # a window of padding only: nowhere to route
            routed[idx[0], idx[1], r, s] += delta[idx]
    np.testing.assert_array_equal(back, routed)


@pytest.mark.parametrize("shape, window, padding", [
    ((2, 3, 5, 7), (2, 2), (0, 0)), ((1, 2, 6, 5), (4, 2), (2, 1)), ((1, 1, 3, 3), (2, 2), (1, 1)),
])
def test_avg_pool_matches_loops(shape, window, padding):
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    pool = AvgPool2d(window, padding)
    out, _ = pool.forward(x)
    expected, _ = loop_pool(x, *window, "avg", *padding)
    np.testing.assert_array_equal(out, expected)
    delta = rng.integers(-1000, 1000, size=out.shape).astype(np.int32)
    back = pool.backward(delta, None, x.shape)
    size = window[0] * window[1]
    (kh, kw), (ph, pw) = window, padding
    for r, s in np.ndindex(shape[2], shape[3]):
        i, j = (r + ph) // kh, (s + pw) // kw
        if i < out.shape[2] and j < out.shape[3]:
            share = np.trunc(delta[:, :, i, j] / size).astype(np.int64)
        else:  # a row or column that no window covers (floor mode)
            share = np.zeros(shape[:2], dtype=np.int64)
        np.testing.assert_array_equal(back[:, :, r, s], share)


def test_head_pool_window_rule():
    # 128 channels on 32×32, head_dim 4096: (2,1) (2,2) (4,2) (4,4) (8,4) -> 128*4*8 = 4096
    assert head_pool_window(128, 32, 32, 4096) == (8, 4)
    assert head_pool_window(512, 2, 2, 4096) == (1, 1)  # already small enough
    assert head_pool_window(64, 7, 7, 2048) == (2, 1)  # 64*4*7 = 1792
    assert head_pool_window(10000, 2, 2, 16) == (2, 2)  # cannot do better than the whole map
    # the published CNN of the golden traces (head_dim 256): 8 channels at 28×28 -> 8*4*7 = 224
    assert head_pool_window(8, 28, 28, 256) == (8, 4)
    assert head_pool_window(32, 3, 3, 256) == (2, 1)  # 32*2*3 = 192


def test_head_pool_pads_both_sides_and_floors():
    # pad = (k * (ceil(d/k) - d//k)) // 2 on each side
    assert head_pool_padding(28, 28, (8, 4)) == (4, 0)
    assert head_pool_padding(3, 3, (2, 1)) == (1, 0)
    assert head_pool_padding(7, 7, (4, 4)) == (2, 2)
    assert head_pool_padding(32, 32, (8, 4)) == (0, 0)
    pool = head_pool("max", 8, 28, 28, 256)
    assert (pool.window, pool.padding, pool.output_shape(8, 28, 28)) == ((8, 4), (4, 0), (8, 4, 7))
    assert head_pool("avg", 32, 3, 3, 256).output_shape(32, 3, 3) == (32, 2, 3)


def c_tdiv(a, d):
    """Reference truncated division on int64 arrays (independent of the engine's tdiv)."""
    a = np.asarray(a, dtype=np.int64)
    return np.sign(a) * (np.abs(a) // d)


def test_conv_block_update_follows_the_contract_step_by_step():
    from sknitro.nn.blocks import ConvBlock
    from sknitro.nn.layers import NitroReLU
    from sknitro.nn.optim import IntegerSGD

    rng = np.random.default_rng(5)
    block = ConvBlock((2, 3, 3), 3, 2, NitroReLU(4), scale_bits=0, rng=rng, head_dim=12, head_pooling="max")
    # the activation (3, 3, 3) = 27 values > head_dim 12: the head window grows to (2, 1), and
    # pads one row above and below the 3-row map: 3 * 2 * 3 = 18 > 12, then (2, 2): 3 * 2 * 2 = 12
    assert block.head_pool.window == (2, 2) and block.head_pool.padding == (1, 1)
    assert block.head.linear.in_features == 12
    x = rng.integers(-60, 60, size=(2, 2, 3, 3)).astype(np.int8)
    target = np.array([[32, 0], [0, 32]], dtype=np.int8)
    W0 = block.conv.weight.astype(np.int64).copy()
    H0 = block.head.linear.weight.astype(np.int64).copy()

    # reference, from algorithm.md §3-§5 with loops and plain integer arithmetic: the head
    # reads the activation itself; the conv layer learns with lr_inv * lr_amp, unscaled
    s = np.clip(c_tdiv(loop_conv(x, W0), 2**0 * 2 * 9), -127, 127)
    a = np.clip(s, 0, 127) + c_tdiv(np.clip(s, -127, 0), 4) - 36
    head_in, head_arg = loop_pool(a, 2, 2, "max", 1, 1)
    flat = head_in.reshape(2, -1)
    yhat = np.clip(c_tdiv(flat @ H0.T, 2**0 * 12), -127, 127)
    e = yhat - target
    d = (e @ H0).reshape(head_in.shape)  # with the head weights from before its update
    d_act = np.zeros(a.shape, dtype=np.int64)
    for idx in np.ndindex(head_in.shape):
        r, c = head_arg[idx]
        d_act[idx[0], idx[1], r, c] += d[idx]
    g = np.where(s >= 127, 0, np.where(s >= 0, d_act, c_tdiv(d_act, 4)))
    grad = loop_conv_weight_grad(x, g)
    lr_inv, amp = 7, 3
    W1 = W0 - c_tdiv(grad, lr_inv * amp)
    H1 = H0 - c_tdiv(e.T @ flat, lr_inv * 1)

    cache = block.forward_train(x, rng)
    yhat_engine = block.learn(cache, target, IntegerSGD(lr_inv), amp, fwd_decay_inv=0, head_decay_inv=0)
    np.testing.assert_array_equal(yhat_engine, yhat)
    np.testing.assert_array_equal(block.head.linear.weight, H1)
    np.testing.assert_array_equal(block.conv.weight, W1)
    assert not np.array_equal(W1, W0)  # the step did move the conv weights


def test_cnn_network_learns_digits():
    from sklearn.datasets import load_digits

    from sknitro.encoding import InputEncoder
    from sknitro.nn.network import build_cnn
    from sknitro.nn.optim import IntegerSGD
    from sknitro.nn.training import train_epoch

    X, y = load_digits(return_X_y=True)
    images = (X * 15).astype(np.uint8).reshape(-1, 1, 8, 8)
    encoded = InputEncoder(channel_axis=1).fit(images[:1400]).transform(images)
    rng = np.random.default_rng(0)
    net = build_cnn((1, 8, 8), [16, "M"], (), 10, rng=rng, fwd_decay_inv=10000, head_decay_inv=8000)
    sgd = IntegerSGD(512)  # the published lr_inv (256 overshoots in the output layer here)
    for _ in range(12):
        stats = train_epoch(net, encoded[:1400], y[:1400], 32, sgd, 64, rng)
    assert stats.head_correct[0] / stats.n_samples > 0.9  # the conv block's own head
    accuracy = (net.predict_scores(encoded[1400:]).argmax(axis=1) == y[1400:]).mean()
    assert accuracy > 0.8
