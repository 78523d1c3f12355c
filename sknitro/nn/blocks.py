"""Local-loss blocks and their learning heads (algorithm.md §4).

A block's forward layers are IntegerLinear -> NITRO scaling -> activation (-> dropout). Its
learning head, IntegerLinear -> NITRO scaling, turns the block output into class scores; the
head's error ``e = yhat - y`` trains the head and, through the head's weights from *before*
the update, the block's own linear layer. Nothing flows into the previous block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import array_namespace
from .layers import IntegerDropout, IntegerLinear, nitro_scale, scale_factor
from .optim import IntegerSGD


class LinearHead:
    """IntegerLinear -> NITRO scaling producing int8 class scores, trained on ``yhat - y``.

    Used both as the learning head of a block and as the network's output layer.
    """

    def __init__(self, in_features: int, n_classes: int, init_bound: int, scale_bits: int,
                 rng: np.random.Generator, bias: bool = False, xp: Any = np) -> None:
        self.linear = IntegerLinear(in_features, n_classes, init_bound, rng, bias, xp)
        self.scale = scale_factor(scale_bits, in_features)

    def forward(self, x: Any) -> Any:
        return nitro_scale(self.linear.forward(x), self.scale)

    def learn(self, x: Any, target: Any, sgd: IntegerSGD, decay_inv: int,
              propagate: bool = False) -> tuple[Any, Any, int]:
        """One update on the local loss ``sum((yhat - y)**2)``.

        Returns
        -------
        yhat : int8 array, the scores before the update
        input_grad : ``e @ W`` with the weights from before the update, or None
        squared_error : int, ``sum(e**2)`` over the batch
        """
        yhat = self.forward(x)
        error = yhat.astype(np.int16) - target  # int8 would wrap: 32 - (-127) = 159
        input_grad = self.linear.input_grad(error) if propagate else None
        sgd.step(self.linear, error, x, amp=1, decay_inv=decay_inv)
        error32 = error.astype(np.int32)
        return yhat, input_grad, int((error32 * error32).sum())


@dataclass
class BlockCache:
    """What a block keeps from the forward pass for its update."""

    inputs: Any
    pre_activation: Any
    dropout_mask: Any
    output: Any


class LinearBlock:
    """Dense local-loss block: Linear -> scaling -> activation (-> dropout) + a linear head."""

    def __init__(self, in_features: int, out_features: int, n_classes: int, activation: Any,
                 scale_bits: int, rng: np.random.Generator, dropout: float = 0.0,
                 bias: bool = False, xp: Any = np) -> None:
        self.linear = IntegerLinear(in_features, out_features,
                                    activation.init_bound(in_features, out_features), rng, bias, xp)
        self.scale = scale_factor(scale_bits, in_features)
        self.activation = activation
        self.dropout = IntegerDropout(dropout) if dropout else None
        self.head = LinearHead(out_features, n_classes,
                               activation.init_bound(out_features, n_classes), scale_bits, rng, bias, xp)

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: Any) -> Any:
        """Inference: no dropout."""
        return self.activation.forward(nitro_scale(self.linear.forward(x), self.scale))

    def forward_train(self, x: Any, rng: np.random.Generator) -> BlockCache:
        pre_activation = nitro_scale(self.linear.forward(x), self.scale)
        output = self.activation.forward(pre_activation)
        mask = None
        if self.dropout is not None:
            mask = self.dropout.draw_mask(rng, output.shape, xp=array_namespace(output))
            output = self.dropout.forward(output, mask)
        return BlockCache(x, pre_activation, mask, output)

    def learn(self, cache: BlockCache, target: Any, sgd: IntegerSGD, amp: int,
              fwd_decay_inv: int, head_decay_inv: int) -> Any:
        """Update the head and then the block from the head's error; returns the head scores."""
        yhat, delta, _ = self.head.learn(cache.output, target, sgd, head_decay_inv, propagate=True)
        if self.dropout is not None:
            delta = self.dropout.backward(delta, cache.dropout_mask)
        delta = self.activation.backward(delta, cache.pre_activation)  # scaling: identity
        sgd.step(self.linear, delta, cache.inputs, amp=amp, decay_inv=fwd_decay_inv)
        return yhat
