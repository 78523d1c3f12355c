"""Local-loss blocks and their learning heads (algorithm.md §4).

A block's forward layers are IntegerLinear (or IntegerConv2d) -> NITRO scaling ->
activation (-> dropout, -> max pooling between conv blocks). Its learning head turns the
block output into class scores (conv blocks first pool the map down to at most ``head_dim``
values); the head's error ``e = yhat - y`` trains the head and, through the head's weights
from *before* the update, the block's own layer. Nothing flows into the previous block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import array_namespace, dtype_bound
from . import fused
from .conv import AvgPool2d, IntegerConv2d, MaxPool2d, conv_amp, head_pool_window
from .layers import INT32_MAX, IntegerDropout, IntegerLinear, scale_factor
from .optim import IntegerSGD, updated_bound


ERROR_BOUND = 127 + 128  # |yhat - target| for int8 scores in [-127, 127] and int8 targets


class LinearHead:
    """IntegerLinear -> NITRO scaling producing int8 class scores, trained on ``yhat - y``.

    Used both as the learning head of a block and as the network's output layer.
    """

    def __init__(self, in_features: int, n_classes: int, init_bound: int, scale_bits: int,
                 rng: np.random.Generator, bias: bool = False, xp: Any = np) -> None:
        self.linear = IntegerLinear(in_features, n_classes, init_bound, rng, bias, xp)
        self.scale = scale_factor(scale_bits, in_features)

    def forward(self, x: Any) -> Any:
        return self.linear.scaled_forward(x, self.scale)

    def learn(self, x: Any, target: Any, sgd: IntegerSGD, decay_inv: int,
              propagate: bool = False) -> tuple[Any, Any, int]:
        """One update on the local loss ``sum((yhat - y)**2)``.

        Returns
        -------
        yhat : int8 array, the scores before the update
        input_grad : ``e @ W`` with the weights from before the update, or None
        squared_error : int, ``sum(e**2)`` over the batch
        """
        fused_result = self._learn_fused(x, target, sgd, decay_inv, propagate)
        if fused_result is not None:
            return fused_result
        yhat = self.forward(x)
        error = yhat.astype(np.int16) - target  # int8 would wrap: 32 - (-127) = 159
        input_grad = self.linear.input_grad(error, ERROR_BOUND) if propagate else None
        sgd.step(self.linear, error, x, amp=1, decay_inv=decay_inv, delta_bound=ERROR_BOUND)
        error32 = error.astype(np.int32)
        return yhat, input_grad, int((error32 * error32).sum())

    def _learn_fused(self, x: Any, target: Any, sgd: IntegerSGD, decay_inv: int,
                     propagate: bool) -> tuple[Any, Any, int] | None:
        """The same update in one compiled call (:func:`.fused.head_step`), or None."""
        if self.linear.bias is not None or not fused.active(self.linear.weight):
            return None
        grad_bound = ERROR_BOUND * dtype_bound(x) * x.shape[0]  # the bound the step would use
        if grad_bound > INT32_MAX:
            return None
        updated_bound(self.linear.weight_bound, grad_bound, sgd.lr_inv, decay_inv)  # raises past int32
        return fused.head_step(self.linear, x, target, self.scale, sgd.lr_inv, decay_inv, propagate,
                               ERROR_BOUND)


@dataclass
class BlockCache:
    """What a block keeps from the forward pass for its update."""

    inputs: Any  # the layer's input (im2col patches for a conv block)
    pre_activation: Any
    dropout_mask: Any
    output: Any
    pool_argmax: Any = None
    pool_input_shape: tuple = ()


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
    def forward_layer(self) -> IntegerLinear:
        return self.linear

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    @property
    def operand_values_per_sample(self) -> int:
        """Size of one sample's row of the forward product's input."""
        return self.linear.in_features

    def forward(self, x: Any) -> Any:
        """Inference: no dropout."""
        x = x.reshape(x.shape[0], -1)  # flattens a conv feature map
        return self.linear.scaled_activated_forward(x, self.scale, self.activation)[1]

    def forward_train(self, x: Any, rng: np.random.Generator) -> BlockCache:
        x = x.reshape(x.shape[0], -1)
        pre_activation, output = self.linear.scaled_activated_forward(x, self.scale, self.activation)
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
        delta, column_l1 = self.activation.backward_and_column_l1(delta, cache.pre_activation)  # scaling: identity
        sgd.step(self.linear, delta, cache.inputs, amp=amp, decay_inv=fwd_decay_inv, column_l1=column_l1)
        return yhat


class ConvBlock:
    """Conv local-loss block: Conv3×3 -> scaling -> activation (-> dropout) (-> 2×2 max pool),
    with a learning head that pools the output to at most ``head_dim`` values, flattens it and
    applies IntegerLinear -> scaling.

    Parameters
    ----------
    input_shape : (C, H, W)
    out_channels : int
    pool : bool
        2×2 max pooling after the activation (a map smaller than the window is padded).
    head_dim : int
        Largest flattened size of the head's input (§4).
    head_pooling : {"max", "avg"}
    """

    def __init__(self, input_shape: tuple[int, int, int], out_channels: int, n_classes: int,
                 activation: Any, scale_bits: int, rng: np.random.Generator, pool: bool = False,
                 dropout: float = 0.0, head_dim: int = 2048, head_pooling: str = "max",
                 xp: Any = np) -> None:
        self.input_shape = tuple(input_shape)
        channels, height, width = input_shape
        fan_in = channels * IntegerConv2d.kernel**2
        self.conv = IntegerConv2d(channels, out_channels, activation.init_bound(fan_in, out_channels * 9), rng, xp)
        self.scale = scale_factor(scale_bits, fan_in)
        self.activation = activation
        self.dropout = IntegerDropout(dropout) if dropout else None
        self.pool = MaxPool2d((2, 2)) if pool else None
        out_h, out_w = (-(-height // 2), -(-width // 2)) if pool else (height, width)
        self.output_shape = (out_channels, out_h, out_w)
        window = head_pool_window(out_channels, out_h, out_w, head_dim)
        self.head_pool = (MaxPool2d if head_pooling == "max" else AvgPool2d)(window)
        head_features = out_channels * -(-out_h // window[0]) * -(-out_w // window[1])
        self.head = LinearHead(head_features, n_classes, activation.init_bound(head_features, n_classes),
                               scale_bits, rng, False, xp)
        # §5: the gradient sums over the conv output positions of each head pooling window
        self.amp_factor = conv_amp(1, height, width, window)

    @property
    def forward_layer(self) -> IntegerConv2d:
        return self.conv

    @property
    def operand_values_per_sample(self) -> int:
        """Size of one sample's im2col patches, the forward product's input."""
        _, height, width = self.input_shape
        return height * width * self.conv.in_channels * IntegerConv2d.kernel**2

    def _features(self, x: Any) -> tuple[Any, Any, Any]:
        return self.conv.scaled_activated_forward(x, self.scale, self.activation)

    def forward(self, x: Any) -> Any:
        """Inference: no dropout."""
        _, output, _ = self._features(x)
        return output if self.pool is None else self.pool.forward(output)[0]

    def forward_train(self, x: Any, rng: np.random.Generator) -> BlockCache:
        pre_activation, output, patches = self._features(x)
        mask = argmax = None
        if self.dropout is not None:
            mask = self.dropout.draw_mask(rng, output.shape, xp=array_namespace(output))
            output = self.dropout.forward(output, mask)
        pool_input_shape = output.shape
        if self.pool is not None:
            output, argmax = self.pool.forward(output)
        return BlockCache(patches, pre_activation, mask, output, argmax, pool_input_shape)

    def learn(self, cache: BlockCache, target: Any, sgd: IntegerSGD, amp: int,
              fwd_decay_inv: int, head_decay_inv: int) -> Any:
        """Update the head and then the conv layer from the head's error; returns the head scores."""
        pooled, head_argmax = self.head_pool.forward(cache.output)
        flat = pooled.reshape(pooled.shape[0], -1)
        yhat, delta, _ = self.head.learn(flat, target, sgd, head_decay_inv, propagate=True)
        delta = self.head_pool.backward(delta.reshape(pooled.shape), head_argmax, cache.output.shape)
        if self.pool is not None:
            delta = self.pool.backward(delta, cache.pool_argmax, cache.pool_input_shape)
        if self.dropout is not None:
            delta = self.dropout.backward(delta, cache.dropout_mask)
        delta = self.activation.backward(delta, cache.pre_activation)  # scaling: identity
        sgd.step(self.conv, delta, cache.inputs, amp=amp * self.amp_factor, decay_inv=fwd_decay_inv)
        return yhat
