"""Local-loss blocks and their learning heads (algorithm.md §4).

A block's forward layers are IntegerLinear (or IntegerConv2d) -> NITRO scaling ->
activation. Its learning head turns the activation into class scores (conv blocks first
pool the map down to at most ``head_dim`` values); the head's error ``e = yhat - y`` trains
the head and, through the head's weights from *before* the update, the block's own layer.
Nothing flows into the previous block.

Between blocks runs the feature path (§4): 2×2 max pooling (floor mode) and dropout. Heads
read their block's activation before those layers, so no gradient ever crosses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import array_namespace, to_host
from . import graph, kernels
from .conv import AvgPool2d, IntegerConv2d, MaxPool2d, head_pool
from .kernels import ERROR_BOUND
from .layers import IntegerDropout, IntegerLinear, TabulatedActivation, scale_factor
from .optim import IntegerSGD
from .state import check_instance, check_int, check_shape, checked_state


SCALE_LIMIT = 2**62  # NITRO divisors are positive; far past any fan_in times 2**scale_bits


def _check_scale(value: Any, owner: str) -> int:
    return check_int(value, f"{owner}.scale", 1, SCALE_LIMIT)


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

    def describe(self, pool: graph.Pool | None = None) -> graph.Head:
        """This head (or output layer) in the network's graph, read after ``pool``."""
        return graph.Head(pool, _dense(self.linear), self.scale)

    def __setstate__(self, state: dict) -> None:
        state = checked_state(state, "LinearHead", ("linear", "scale"))
        self.linear = check_instance(state["linear"], "LinearHead.linear", IntegerLinear)
        self.scale = _check_scale(state["scale"], "LinearHead")

    def learn(self, x: Any, target: Any, sgd: IntegerSGD, decay_inv: int,
              propagate: bool = False) -> tuple[Any, Any, int]:
        """One update on the local loss ``sum((yhat - y)**2)``.

        Returns
        -------
        yhat : int8 array, the scores before the update
        input_grad : ``e @ W`` with the weights from before the update, or None
        squared_error : int, ``sum(e**2)`` over the batch
        """
        return kernels.select().head_step(self.linear, x, target, self.scale, sgd.lr_inv, decay_inv, propagate)


def _dense(layer: IntegerLinear) -> graph.Dense:
    if layer.bias is not None:  # no estimator builds one; the graph has no bias term
        raise ValueError("the network graph describes layers without bias only")
    return graph.Dense(np.array(to_host(layer.weight)))


@dataclass
class BlockCache:
    """What a block keeps from the forward pass for its update."""

    inputs: Any  # the layer's input (im2col patches for a conv block)
    pre_activation: Any  # NITRO scaling's output (a conv block's as rows: one per output position)
    output: Any  # the activation's output: what the head reads and the feature path continues with


class LinearBlock:
    """Dense local-loss block: Linear -> scaling -> activation, with a linear head.

    ``updates_per_step`` is how many times :meth:`learn` runs on each batch's forward pass:
    1, except for the dense blocks of the published CNNs, which it trains twice per step
    (the published code updates its nested MLP's blocks both from the CNN's loop and from
    the MLP's own; its recorded traces, and so its results, have that double update).
    """

    def __init__(self, in_features: int, out_features: int, n_classes: int, activation: Any,
                 scale_bits: int, rng: np.random.Generator, bias: bool = False, xp: Any = np,
                 updates_per_step: int = 1) -> None:
        self.updates_per_step = updates_per_step
        self.linear = IntegerLinear(in_features, out_features,
                                    activation.init_bound(in_features, out_features), rng, bias, xp)
        self.scale = scale_factor(scale_bits, in_features)
        self.activation = activation
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

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.linear.out_features,)

    def describe(self, input_shape: tuple[int, ...]) -> graph.Block:
        """This block in the network's graph (see :mod:`.graph`)."""
        return graph.Block(_dense(self.linear), self.scale, self.activation.describe(), self.head.describe(),
                           self.updates_per_step, tuple(input_shape), self.output_shape(input_shape))

    def forward(self, x: Any) -> Any:
        x = x.reshape(x.shape[0], -1)  # flattens a conv feature map
        return self.linear.scaled_activated_forward(x, self.scale, self.activation)[1]

    def forward_train(self, x: Any, rng: np.random.Generator) -> BlockCache:
        x = x.reshape(x.shape[0], -1)
        pre_activation, output = self.linear.scaled_activated_forward(x, self.scale, self.activation)
        return BlockCache(x, pre_activation, output)

    def product(self, x: Any) -> Any:
        """The forward layer's integer product ``z`` for the block's input ``x`` (before scaling)."""
        return self.linear.forward(x.reshape(x.shape[0], -1))

    def __setstate__(self, state: dict) -> None:
        state = checked_state(state, "LinearBlock", ("linear", "scale", "activation", "head", "updates_per_step"))
        self.linear = check_instance(state["linear"], "LinearBlock.linear", IntegerLinear)
        self.scale = _check_scale(state["scale"], "LinearBlock")
        self.activation = check_instance(state["activation"], "LinearBlock.activation", TabulatedActivation)
        self.head = check_instance(state["head"], "LinearBlock.head", LinearHead)
        self.updates_per_step = check_int(state["updates_per_step"], "LinearBlock.updates_per_step", 1, 2)

    def learn(self, cache: BlockCache, target: Any, sgd: IntegerSGD, amp: int,
              fwd_decay_inv: int, head_decay_inv: int) -> Any:
        """Update the head and then the block from the head's error; returns the head scores."""
        yhat, delta, _ = self.head.learn(cache.output, target, sgd, head_decay_inv, propagate=True)
        # scaling: identity
        delta, column_l1, largest = self.activation.backward_and_bounds(delta, cache.pre_activation)
        sgd.step(self.linear, delta, cache.inputs, amp=amp, decay_inv=fwd_decay_inv, delta_bound=largest,
                 column_l1=column_l1)
        return yhat


class ConvBlock:
    """Conv local-loss block: Conv3×3 -> scaling -> activation, with a learning head that
    pools the activation to at most ``head_dim`` values (§4: window from the block's own
    output size, symmetric padding, floor mode), flattens it and applies IntegerLinear ->
    scaling.

    Parameters
    ----------
    input_shape : (C, H, W)
    out_channels : int
    head_dim : int
        Largest flattened size of the head's input (§4).
    head_pooling : {"max", "avg"}
    """

    def __init__(self, input_shape: tuple[int, int, int], out_channels: int, n_classes: int,
                 activation: Any, scale_bits: int, rng: np.random.Generator, head_dim: int = 2048,
                 head_pooling: str = "max", xp: Any = np) -> None:
        self.updates_per_step = 1
        self.input_shape = tuple(input_shape)
        channels, height, width = input_shape
        fan_in = channels * IntegerConv2d.kernel**2
        self.conv = IntegerConv2d(channels, out_channels, activation.init_bound(fan_in, out_channels * 9), rng, xp)
        self.scale = scale_factor(scale_bits, fan_in)
        self.activation = activation
        self.head_pool = head_pool(head_pooling, out_channels, height, width, head_dim)
        head_features = math.prod(self.head_pool.output_shape(out_channels, height, width))
        self.head = LinearHead(head_features, n_classes, activation.init_bound(head_features, n_classes),
                               scale_bits, rng, False, xp)

    @property
    def forward_layer(self) -> IntegerConv2d:
        return self.conv

    @property
    def operand_values_per_sample(self) -> int:
        """Size of one sample's im2col patches, the forward product's input."""
        _, height, width = self.input_shape
        return height * width * self.conv.in_channels * IntegerConv2d.kernel**2

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.conv.out_channels, *self.input_shape[1:])

    def describe(self, input_shape: tuple[int, ...]) -> graph.Block:
        """This block in the network's graph (see :mod:`.graph`)."""
        output_shape = self.output_shape(input_shape)
        weight = np.ascontiguousarray(to_host(self.conv.weight))
        layer = graph.Conv3x3(weight, self.input_shape, self.conv.padding)
        head = self.head.describe(self.head_pool.describe(output_shape))
        return graph.Block(layer, self.scale, self.activation.describe(), head, self.updates_per_step,
                           self.input_shape, output_shape)

    def forward(self, x: Any) -> Any:
        return self.conv.scaled_activated_forward(x, self.scale, self.activation)[1]

    def forward_train(self, x: Any, rng: np.random.Generator) -> BlockCache:
        pre_activation, output, patches = self.conv.scaled_activated_forward(x, self.scale, self.activation)
        return BlockCache(patches, pre_activation, output)

    def product(self, x: Any) -> Any:
        """The convolution's integer product ``z`` for the block's input ``x`` (before scaling)."""
        return self.conv.forward(x)[0]

    def __setstate__(self, state: dict) -> None:
        state = checked_state(state, "ConvBlock", ("input_shape", "conv", "scale", "activation", "head_pool",
                                                   "head", "updates_per_step"))
        self.input_shape = check_shape(state["input_shape"], "ConvBlock.input_shape", 3)
        self.conv = check_instance(state["conv"], "ConvBlock.conv", IntegerConv2d)
        self.scale = _check_scale(state["scale"], "ConvBlock")
        self.activation = check_instance(state["activation"], "ConvBlock.activation", TabulatedActivation)
        self.head_pool = check_instance(state["head_pool"], "ConvBlock.head_pool", (MaxPool2d, AvgPool2d))
        self.head = check_instance(state["head"], "ConvBlock.head", LinearHead)
        self.updates_per_step = check_int(state["updates_per_step"], "ConvBlock.updates_per_step", 1, 1)

    def learn(self, cache: BlockCache, target: Any, sgd: IntegerSGD, amp: int,
              fwd_decay_inv: int, head_decay_inv: int) -> Any:
        """Update the head and then the conv layer from the head's error; returns the head scores."""
        pooled, head_argmax = self.head_pool.forward(cache.output)
        flat = pooled.reshape(pooled.shape[0], -1)
        yhat, delta, _ = self.head.learn(flat, target, sgd, head_decay_inv, propagate=True)
        delta = self.head_pool.backward(delta.reshape(pooled.shape), head_argmax, cache.output.shape)
        # scaling: identity; the products' layout from here on, one row per output position
        delta, column_l1, largest = self.activation.backward_and_bounds(self.conv.to_rows(delta),
                                                                        cache.pre_activation)
        sgd.step(self.conv.linear, delta, cache.inputs, amp=amp, decay_inv=fwd_decay_inv, delta_bound=largest,
                 column_l1=column_l1)
        return yhat


# ---------------------------------------------------------------------------------------
# the feature path between blocks (§4): layers that learn nothing and pass no gradient


class FeaturePool:
    """2×2 max pooling, stride 2, no padding, floor mode (7 -> 3), between blocks.

    A side shorter than 2 (images of one row, a map already pooled to 1) keeps a window of 1
    on that side, where the published code would fail: flat tables still go through a CNN.
    """

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        self.input_shape = tuple(input_shape)
        channels, height, width = input_shape
        self.pool = MaxPool2d((min(2, height), min(2, width)))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.pool.output_shape(*self.input_shape)

    def describe(self, input_shape: tuple[int, ...]) -> graph.Pool:
        return self.pool.describe(self.input_shape)

    def __setstate__(self, state: dict) -> None:
        state = checked_state(state, "FeaturePool", ("input_shape",), derived=("pool",))
        self.__init__(check_shape(state["input_shape"], "FeaturePool.input_shape", 3))

    def forward(self, x: Any) -> Any:
        return self.pool.forward(x)[0]

    def forward_train(self, x: Any, rng: np.random.Generator) -> Any:
        return self.forward(x)


class FeatureDropout:
    """Dropout on the feature path: active in training only; heads never read its output."""

    def __init__(self, p: float) -> None:
        self.dropout = IntegerDropout(p)

    def __setstate__(self, state: dict) -> None:
        state = checked_state(state, "FeatureDropout", ("dropout",))
        self.dropout = check_instance(state["dropout"], "FeatureDropout.dropout", IntegerDropout)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def describe(self, input_shape: tuple[int, ...]) -> graph.Dropout:
        return graph.Dropout(self.dropout.keep_percent, self.dropout.rescale, tuple(input_shape))

    def forward(self, x: Any) -> Any:
        return x

    def forward_train(self, x: Any, rng: np.random.Generator) -> Any:
        mask = self.dropout.draw_mask(rng, x.shape, xp=array_namespace(x))
        return self.dropout.forward(x, mask)
