"""An independent, slow NITRO-D trainer that records traces in the published code's format.

Written from algorithm.md §3-§5 and the golden traces' README with plain int64 NumPy and
no sknitro import, so that ``sknitro.reference.replay_trace`` can be checked on architectures
the shipped traces do not cover. It reproduces the published networks' rules: floor-mode
feature pooling, heads on the block's activation with the §4 window and symmetric padding,
one ``lr_amp`` for every block, dense blocks of a CNN updated twice per step.
"""

import json

import numpy as np

MU = {3: 31, 4: 36, 5: 38, 7: 40, 8: 42, 10: 43, 15: 44, 16: 44, 20: 45}


def tdiv(a, d):
    a = np.asarray(a, dtype=np.int64)
    return np.sign(a) * (np.abs(a) // d)


def scale(z, fan_in):
    return np.clip(tdiv(z, 256 * fan_in), -127, 127)


def relu(s, alpha):
    return np.clip(s, 0, 127) + tdiv(np.clip(s, -127, 0), alpha) - MU[alpha]


def relu_backward(delta, s, alpha):
    return np.where(s >= 127, 0, np.where(s >= 0, delta, tdiv(delta, alpha)))


def conv(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    return sum(np.einsum("fc,ncij->nfij", w[:, :, u, v], xp[:, :, u:u + h, v:v + wd])
               for u in range(3) for v in range(3))


def conv_grad(x, delta):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    grad = np.zeros((delta.shape[1], x.shape[1], 3, 3), dtype=np.int64)
    for u in range(3):
        for v in range(3):
            grad[:, :, u, v] = np.einsum("nfij,ncij->fc", delta, xp[:, :, u:u + h, v:v + wd])
    return grad


def head_window(c, d, head_dim):
    kh = kw = 1
    turn = 0
    while c * -(-d // kh) * -(-d // kw) > head_dim and (kh < d or kw < d):
        if turn == 0:
            kh *= 2
        else:
            kw *= 2
        turn = 1 - turn
    return kh, kw


def pool(x, kh, kw, ph, pw, kind):
    """Windows of kh×kw, stride (kh, kw), padding on both sides, floor mode. Returns the map
    and, per output, the (row, column) of the first maximum (max) or None (avg)."""
    n, c, h, w = x.shape
    fill = -128 if kind == "max" else 0
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill, dtype=np.int64)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    ho, wo = (h + 2 * ph - kh) // kh + 1, (w + 2 * pw - kw) // kw + 1
    windows = xp[:, :, :ho * kh, :wo * kw].reshape(n, c, ho, kh, wo, kw).transpose(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(n, c, ho, wo, kh * kw)
    if kind == "avg":
        return tdiv(windows.sum(axis=-1), kh * kw), None
    return windows.max(axis=-1), windows.argmax(axis=-1)  # argmax: the first maximum


def pool_backward(delta, where, shape, kh, kw, ph, pw, kind):
    n, c, h, w = shape
    out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=np.int64)
    ho, wo = delta.shape[2:]
    share = tdiv(delta, kh * kw) if kind == "avg" else delta
    for k in range(kh * kw):
        u, v = divmod(k, kw)
        part = share if kind == "avg" else delta * (where == k)
        out[:, :, u:ho * kh:kh, v:wo * kw:kw] += part
    return out[:, :, ph:ph + h, pw:pw + w]


def sgd(w, grad, divisor, decay_inv):
    return w - tdiv(grad, divisor) - (tdiv(w, decay_inv) if decay_inv else 0)


class TraceWriter:
    """Builds random initial weights for ``spec`` and trains on ``x, y``, recording a trace."""

    def __init__(self, spec, sample_shape, n_classes, rng):
        self.spec, self.alpha, self.n_classes = spec, spec["nitro_leaky_relu_alpha_inv"], n_classes
        self.blocks, self.names, self.weights = [], [], {}
        shape = tuple(sample_shape)
        fe = spec.get("fe_architecture", [])
        for i, layer in enumerate(fe):
            if layer[0] == "MaxPool2d":
                self.blocks.append(("pool", None))
                shape = (shape[0], shape[1] // 2, shape[2] // 2)
                continue
            c, d = shape[0], shape[1]
            out = layer[1]
            kh, kw = head_window(out, d, spec["head_dim"])
            ph, pw = (kh * (-(-d // kh) - d // kh)) // 2, (kw * (-(-d // kw) - d // kw)) // 2
            features = out * ((d + 2 * ph - kh) // kh + 1) * ((d + 2 * pw - kw) // kw + 1)
            enc, head = self._new(f"conv_encoder_{i:02d}", (out, c, 3, 3), 30, rng), \
                self._new(f"linear_pred_{i:02d}", (n_classes, features), 20, rng)
            self.blocks.append(("conv", (enc, head, 9 * c, features, (kh, kw, ph, pw))))
            shape = (out, d, d)
        width = int(np.prod(shape))
        hidden = spec.get("dense_hidden", spec.get("hidden", []))
        for j, h in enumerate(hidden):
            i = len(fe) + j
            enc, head = self._new(f"linear_encoder_{i:02d}", (h, width), 30, rng), \
                self._new(f"linear_pred_{i:02d}", (n_classes, h), 20, rng)
            self.blocks.append(("dense", (enc, head, width, h)))
            width = h
        self.output = self._new(f"linear_{len(fe) + len(hidden):02d}", (n_classes, width), 20, rng)
        self.output_fan_in = width
        self.dense_updates = 2 if fe else 1

    def _new(self, name, shape, bound, rng):
        name = f"{len(self.names):02d}_{name}"
        self.names.append(name)
        self.weights[name] = rng.integers(-bound, bound + 1, size=shape).astype(np.int64)
        return name

    def head_scores(self, head, x, fan_in):
        return scale(x @ self.weights[head].T, fan_in)

    def forward(self, x):
        x = x.astype(np.int64)
        caches = []
        for kind, block in self.blocks:
            if kind == "pool":
                x = pool(x, 2, 2, 0, 0, "max")[0]
                continue
            enc = self.weights[block[0]]
            if kind == "conv":
                s = scale(conv(x, enc), block[2])
            else:
                x = x.reshape(len(x), -1)
                s = scale(x @ enc.T, block[2])
            a = relu(s, self.alpha)
            caches.append((kind, block, x, s, a))
            x = a
        x = x.reshape(len(x), -1)
        return scale(x @ self.weights[self.output].T, self.output_fan_in), x, caches

    def step(self, x, target):
        spec = self.spec
        lr_inv, lr_amp = spec["lr_inv"], spec["lr_amp"]
        fwd_decay, head_decay = spec["fwd_decay_inv"], spec["head_decay_inv"]
        yhat, last, caches = self.forward(x)
        e = yhat - target
        self.weights[self.output] = sgd(self.weights[self.output], e.T @ last, lr_inv, head_decay)
        for kind, block, inputs, s, a in caches:
            for _ in range(self.dense_updates if kind == "dense" else 1):
                enc, head = block[0], block[1]
                if kind == "conv":
                    kh, kw, ph, pw = block[4]
                    pooled, where = pool(a, kh, kw, ph, pw, spec["head_pooling"])
                    flat = pooled.reshape(len(a), -1)
                else:
                    flat = a
                w_head = self.weights[head]
                e = self.head_scores(head, flat, flat.shape[1]) - target
                d = e @ w_head
                self.weights[head] = sgd(w_head, e.T @ flat, lr_inv, head_decay)
                if kind == "conv":
                    d = pool_backward(d.reshape(pooled.shape), where, a.shape, kh, kw, ph, pw, spec["head_pooling"])
                    grad = conv_grad(inputs, relu_backward(d, s, self.alpha))
                else:
                    grad = relu_backward(d, s, self.alpha).T @ inputs
                self.weights[enc] = sgd(self.weights[enc], grad, lr_inv * lr_amp, fwd_decay)
        return yhat


def write_trace(folder, name, spec, x, y, eval_x, n_classes, seed=0):
    """Train a random initialisation of ``spec`` on ``x, y`` and write ``name.npz`` / ``.json``."""
    rng = np.random.default_rng(seed)
    writer = TraceWriter(spec, x.shape[1:], n_classes, rng)
    arrays = {f"init/{k}": v.astype(np.int32) for k, v in writer.weights.items()}
    target = np.zeros((len(y), n_classes), dtype=np.int64)
    target[np.arange(len(y)), y] = spec["target_value"]
    bs = spec["batch_size"]
    steps = len(x) // bs
    for step in range(1, steps + 1):
        batch = slice((step - 1) * bs, step * bs)
        arrays[f"step{step:02d}/output"] = writer.step(x[batch], target[batch]).astype(np.int32)
        arrays.update({f"step{step:02d}/{k}": v.astype(np.int32) for k, v in writer.weights.items()})
    arrays["x"], arrays["y"] = x.astype(np.int8), y.astype(np.int64)
    arrays["eval/x"], arrays["eval/output"] = eval_x.astype(np.int8), writer.forward(eval_x)[0].astype(np.int32)
    spec = {**spec, "steps": steps, "layer_names": writer.names, "bias": False, "dropout": 0.0,
            "layer_shapes": {k: list(v.shape) for k, v in writer.weights.items()}}
    np.savez(folder / f"{name}.npz", **arrays)
    (folder / f"{name}.json").write_text(json.dumps(spec))
    return folder / f"{name}.npz", arrays
