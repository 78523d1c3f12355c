"""The engine's own description of a network: what inference and training compute, as data.

:meth:`IntegerNetwork.graph() <sknitro.nn.network.IntegerNetwork.graph>` returns a
:class:`NetworkGraph`: the feature path (blocks, pooling, dropout) and the output layer,
each with its integer constants and host copies of its weights. It is what an exporter reads
(``sknitro.export``): nothing outside the engine reaches into the blocks. Every rule is the
engine's (algorithm.md §3-§5):

- a layer's product ``z`` is exact; ``s = clip(tdiv(z, scale), -127, 127)`` (NITRO scaling);
- an activation is ``forward_table[s + 128]``; its backward is
  ``tdiv(delta * backward_multiplier[s + 128], backward_divisor)``;
- a head pools (conv blocks), scores ``yhat = clip(tdiv(x @ W.T, scale), -127, 127)`` and
  learns from ``e = yhat - target``; the block learns from ``e @ W`` (the head's weights
  before its update) through the pooling's and the activation's backward;
- IntegerSGD: ``W -= tdiv(G, lr_inv * amp) + tdiv(W, decay_inv)`` with ``amp = lr_amp`` for
  the blocks' layers and 1 for heads and the output layer (decays ``fwd_decay_inv`` and
  ``head_decay_inv``; 0 means none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np


@dataclass(frozen=True)
class Dense:
    """``z = x @ weight.T`` on the flattened input (row-major); ``weight`` is ``(out, in)``."""

    weight: np.ndarray


@dataclass(frozen=True)
class Conv3x3:
    """``z[f, i, j] = sum_{c,u,v} weight[f, c, u, v] * xpad[c, i + u, j + v]``, ``xpad`` the
    ``(C, H, W)`` input with ``padding`` zeros on every side (stride 1, not flipped)."""

    weight: np.ndarray  # (F, C, 3, 3)
    input_shape: tuple[int, int, int]
    padding: int


@dataclass(frozen=True)
class Activation:
    """A tabulated activation over ``s`` in ``[-128, 127]`` (index ``s + 128``)."""

    name: str
    forward_table: np.ndarray  # int8, 256
    backward_multiplier: np.ndarray  # int32, 256
    backward_divisor: int
    negative_slope_inv: int | None = None  # the leaky activations' parameter


@dataclass(frozen=True)
class Pool:
    """``kind`` pooling (``"max"`` or ``"avg"``) with stride = window, ``padding`` rows and
    columns on both sides (max pads with -128, avg with 0), floor mode. Backward: max routes
    each window's delta to its first maximum (row-major window order); avg spreads
    ``tdiv(delta, kh * kw)`` over the window."""

    kind: str
    window: tuple[int, int]
    padding: tuple[int, int]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]


@dataclass(frozen=True)
class Dropout:
    """Training only: a kept value becomes ``tdiv(x * rescale, 1000)`` (int16), a dropped one 0;
    each value is kept with probability ``keep_percent / 100``. Inference: the identity."""

    keep_percent: int
    rescale: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Head:
    """A learning head (or the output layer): optional pooling, then ``Dense`` and scaling."""

    pool: Pool | None
    dense: Dense
    scale: int


@dataclass(frozen=True)
class Block:
    """A local-loss block: ``layer`` -> scaling -> ``activation``, trained by ``head``
    ``updates_per_step`` times per batch (from the same forward pass)."""

    layer: Dense | Conv3x3
    scale: int
    activation: Activation
    head: Head
    updates_per_step: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


Stage = Union[Block, Pool, Dropout]


@dataclass(frozen=True)
class NetworkGraph:
    """A network's inference and training graph (see the module)."""

    input_shape: tuple[int, ...]
    path: tuple[Stage, ...]
    output: Head
    lr_amp: int
    fwd_decay_inv: int
    head_decay_inv: int

    @property
    def n_classes(self) -> int:
        return int(self.output.dense.weight.shape[0])

    @property
    def blocks(self) -> list[Block]:
        return [stage for stage in self.path if isinstance(stage, Block)]

    @property
    def output_input_size(self) -> int:
        """Values the output layer reads (the path's last map, flattened)."""
        return int(self.output.dense.weight.shape[1])

    def max_map_size(self) -> int:
        """The largest map (values per sample) anywhere on the path."""
        sizes = [math.prod(self.input_shape)]
        for stage in self.path:
            if isinstance(stage, Block):
                sizes.append(math.prod(stage.output_shape))
            elif isinstance(stage, Pool):
                sizes.append(math.prod(stage.output_shape))
        return max(sizes)
