"""A NITRO-D network: a chain of local-loss blocks followed by an output layer (§4, §7)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import array_namespace, get_namespace, to_host, to_namespace
from .graph import NetworkGraph
from .blocks import BlockCache, ConvBlock, FeatureDropout, FeaturePool, LinearBlock, LinearHead
from .layers import make_activation
from .optim import IntegerSGD
from .state import InvalidModelError, check_instance, check_int, checked_state

INFERENCE_BATCH_VALUES = 2**22
PATH_STAGES = (ConvBlock, LinearBlock, FeaturePool, FeatureDropout)


@dataclass
class StepStats:
    """Integer counters of one training step (or a sum of steps)."""

    n_samples: int = 0
    n_correct: int = 0
    squared_error: int = 0
    head_correct: list[int] = field(default_factory=list)

    def add(self, other: StepStats) -> None:
        self.n_samples += other.n_samples
        self.n_correct += other.n_correct
        self.squared_error += other.squared_error
        if not self.head_correct:
            self.head_correct = [0] * len(other.head_correct)
        self.head_correct = [a + b for a, b in zip(self.head_correct, other.head_correct)]


class IntegerNetwork:
    """The feature path (blocks, pooling, dropout) + output layer, with the integer
    hyperparameters of IntegerSGD.

    Parameters
    ----------
    path : list of stages
        Local-loss blocks (``forward``, ``forward_train`` returning a :class:`BlockCache`,
        ``learn``) and the layers between them (``forward``, ``forward_train`` returning the
        array: :class:`FeaturePool`, :class:`FeatureDropout`), in forward order.
    output : LinearHead
    lr_amp : int
        Learning-rate amplification of the blocks' forward layers (heads and output use 1).
    fwd_decay_inv, head_decay_inv : int
        Weight-decay inverses of forward layers and of heads/output (0: no decay).
    """

    def __init__(self, path: Sequence[Any], output: LinearHead, lr_amp: int,
                 fwd_decay_inv: int, head_decay_inv: int) -> None:
        self.path = list(path)
        self.output = output
        self.lr_amp = lr_amp
        self.fwd_decay_inv = fwd_decay_inv
        self.head_decay_inv = head_decay_inv

    def __setstate__(self, state: dict) -> None:
        state = checked_state(state, "IntegerNetwork", ("path", "output", "lr_amp", "fwd_decay_inv",
                                                        "head_decay_inv"))
        if not isinstance(state["path"], list):
            raise InvalidModelError("IntegerNetwork.path must be a list")
        self.path = [check_instance(stage, "IntegerNetwork.path[]", PATH_STAGES) for stage in state["path"]]
        self.output = check_instance(state["output"], "IntegerNetwork.output", LinearHead)
        self.lr_amp = check_int(state["lr_amp"], "IntegerNetwork.lr_amp", 1, 2**31 - 1)
        self.fwd_decay_inv = check_int(state["fwd_decay_inv"], "IntegerNetwork.fwd_decay_inv", 0, 2**31 - 1)
        self.head_decay_inv = check_int(state["head_decay_inv"], "IntegerNetwork.head_decay_inv", 0, 2**31 - 1)
        self.check_structure()

    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample the network reads: ``(C, H, W)`` or ``(features,)``."""
        first = next((stage for stage in self.path if not isinstance(stage, FeatureDropout)), None)
        if isinstance(first, (ConvBlock, FeaturePool)):
            return first.input_shape
        return (first.linear.in_features,) if first is not None else (self.output.linear.in_features,)

    def check_structure(self) -> None:
        """Raise :class:`InvalidModelError` unless each layer reads what the one before it
        produces (a loaded model file could pair any arrays)."""
        shape, n_classes = self.input_shape(), self.n_classes
        for i, stage in enumerate(self.path):
            where = f"IntegerNetwork.path[{i}] ({type(stage).__name__})"
            if isinstance(stage, (ConvBlock, FeaturePool)):
                if len(shape) != 3 or tuple(stage.input_shape) != tuple(shape):
                    raise InvalidModelError(f"{where} reads {stage.input_shape}, but receives {shape}")
            if isinstance(stage, ConvBlock):
                pooled = stage.head_pool.output_shape(stage.conv.out_channels, *shape[1:])
                if stage.conv.in_channels != shape[0] or min(pooled) < 1 \
                        or stage.head.linear.in_features != math.prod(pooled):
                    raise InvalidModelError(f"{where}: its convolution or head does not fit its {shape} input")
            elif isinstance(stage, LinearBlock):
                if stage.linear.in_features != math.prod(shape) \
                        or stage.head.linear.in_features != stage.linear.out_features:
                    raise InvalidModelError(f"{where}: its layer or head does not fit its {shape} input")
            if hasattr(stage, "head") and stage.head.linear.out_features != n_classes:
                raise InvalidModelError(f"{where}: its head scores {stage.head.linear.out_features} classes, "
                                        f"the output layer {n_classes}")
            shape = stage.output_shape(shape)
            if min(shape) < 1:
                raise InvalidModelError(f"{where} produces an empty map {shape}")
        if self.output.linear.in_features != math.prod(shape):
            raise InvalidModelError(f"IntegerNetwork.output reads {self.output.linear.in_features} features, "
                                    f"but receives {math.prod(shape)}")

    def graph(self) -> NetworkGraph:
        """What inference and training compute, as data (see :mod:`.graph`): the engine's
        own description, which exporters read instead of the blocks' internals."""
        shape, path = self.input_shape(), []
        for stage in self.path:
            path.append(stage.describe(shape))
            shape = stage.output_shape(shape)
        return NetworkGraph(tuple(self.input_shape()), tuple(path), self.output.describe(), self.lr_amp,
                            self.fwd_decay_inv, self.head_decay_inv)

    @property
    def blocks(self) -> list[Any]:
        """The local-loss blocks of the path, in forward order."""
        return [stage for stage in self.path if isinstance(stage, (LinearBlock, ConvBlock))]

    # -- inference ----------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Integer class scores (int8, ``(n, n_classes)``) of the output layer."""
        for stage in self.path:
            x = stage.forward(x)
        return self.output.forward(x.reshape(x.shape[0], -1))

    def predict_scores(self, X: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Scores for a whole host array, computed in batches to bound memory.

        By default a batch holds at most ``INFERENCE_BATCH_VALUES`` values in its largest
        product operand (the im2col patches of a conv layer): past that size the float64
        copies no longer fit the caches, and a conv network scores 3x slower.
        """
        if batch_size is None:
            largest = max([block.operand_values_per_sample for block in self.blocks]
                          + [self.output.linear.in_features])
            batch_size = min(max(INFERENCE_BATCH_VALUES // largest, 1), 2048)
        xp = array_namespace(self.output.linear.weight)
        try:
            parts = [to_host(self.forward(to_namespace(X[i:i + batch_size], xp)))
                     for i in range(0, X.shape[0], batch_size)]
        finally:
            self.drop_weight_copies()  # the last batch's input copies: as large as the batch
        return np.concatenate(parts) if parts else np.zeros((0, self.n_classes), np.int8)

    @property
    def n_classes(self) -> int:
        return self.output.linear.out_features

    # -- training -----------------------------------------------------------------------
    def train_step(self, x: Any, target: Any, labels: Any, sgd: IntegerSGD,
                   rng: np.random.Generator) -> StepStats:
        """Forward the whole batch, then update the output layer and every block.

        ``target`` is the int8 one-hot target scaled to ``target_value``; ``labels`` the
        class indices (for the accuracy counters).
        """
        learning = []
        for stage in self.path:
            result = stage.forward_train(x, rng)
            if isinstance(result, BlockCache):
                learning.append((stage, result))
                result = result.output
            x = result
        x = x.reshape(x.shape[0], -1)
        scores, _, squared_error = self.output.learn(x, target, sgd, self.head_decay_inv)
        head_correct = []
        for block, cache in learning:
            head_scores = block.learn(cache, target, sgd, self.lr_amp,
                                      self.fwd_decay_inv, self.head_decay_inv)
            for _ in range(block.updates_per_step - 1):
                block.learn(cache, target, sgd, self.lr_amp, self.fwd_decay_inv, self.head_decay_inv)
            head_correct.append(int((head_scores.argmax(axis=1) == labels).sum()))
        n_correct = int((scores.argmax(axis=1) == labels).sum())
        return StepStats(len(labels), n_correct, squared_error, head_correct)

    # -- state ----------------------------------------------------------------------------
    def layers(self) -> list[Any]:
        """Every weighted layer, in a fixed order (forward layers, heads, output)."""
        return ([b.forward_layer for b in self.blocks] + [b.head.linear for b in self.blocks]
                + [self.output.linear])

    def drop_weight_copies(self) -> None:
        """Drop the compiled kernels' copies of the weights and inputs (they live for one
        epoch, or one call of :meth:`predict_scores`)."""
        for layer in self.layers():
            layer.drop_copies()

    def get_weights(self) -> list[np.ndarray]:
        """Host copies of every weight (and bias) array, in ``layers()`` order."""
        arrays = []
        for layer in self.layers():
            arrays.append(to_host(layer.weight).copy())
            if layer.bias is not None:
                arrays.append(to_host(layer.bias).copy())
        return arrays

    def set_weights(self, arrays: Sequence[np.ndarray]) -> None:
        """Restore arrays produced by :meth:`get_weights`."""
        it = iter(arrays)
        for layer in self.layers():
            xp = array_namespace(layer.weight)
            layer.weight = to_namespace(np.array(next(it)), xp)
            if layer.bias is not None:
                layer.bias = to_namespace(np.array(next(it)), xp)
            layer.refresh_bounds()

    def namespace(self) -> ModuleType:
        """The array module (numpy or cupy) holding the weights."""
        return array_namespace(self.output.linear.weight)

    def to(self, xp: ModuleType) -> IntegerNetwork:
        """A copy of the network with every weight and bias array in ``xp``.

        ``network.to(numpy)`` is a host copy of a GPU network (what pickling stores),
        ``network.to(cupy)`` a GPU copy. The network itself is left unchanged, and the copy
        shares no array with it; the rest of the structure (scale factors, activation
        tables, pooling windows) is copied as is.
        """
        # deepcopy with the converted arrays already in its memo: the structure is copied
        # generically, and a GPU array is never duplicated on the GPU.
        memo: dict[int, Any] = {}
        for layer in self.layers():
            layer = getattr(layer, "linear", layer)  # a conv layer's weights live in its linear
            for array in (layer.weight, layer.bias):
                if array is not None:
                    host = to_host(array)
                    memo[id(array)] = to_namespace(host.copy() if host is array else host, xp)
        return copy.deepcopy(self, memo)


def build_mlp(n_features: int, hidden_layer_sizes: Sequence[int], n_classes: int, *,
              activation: str = "nitro_relu", negative_slope_inv: int = 4, scale_bits: int = 8,
              dropout: float = 0.0, lr_amp: int | None = None, fwd_decay_inv: int = 0,
              head_decay_inv: int = 0, bias: bool = False, rng: np.random.Generator,
              device: str = "cpu") -> IntegerNetwork:
    """Build a dense NITRO-D network: one local-loss block per hidden layer (each followed by
    dropout when ``dropout > 0``), then the output layer."""
    xp = get_namespace(device)
    path, output = _dense_part(n_features, hidden_layer_sizes, n_classes, activation,
                               negative_slope_inv, scale_bits, dropout, bias, rng, xp)
    return IntegerNetwork(path, output, 64 * n_classes if lr_amp is None else lr_amp,
                          fwd_decay_inv, head_decay_inv)


def build_cnn(input_shape: tuple[int, int, int], features: Sequence[int | str],
              hidden_layer_sizes: Sequence[int], n_classes: int, *, activation: str = "nitro_relu",
              negative_slope_inv: int = 4, scale_bits: int = 8, conv_dropout: float = 0.0,
              dropout: float = 0.0, head_dim: int = 2048, head_pooling: str = "max",
              lr_amp: int | None = None, fwd_decay_inv: int = 0, head_decay_inv: int = 0,
              rng: np.random.Generator, device: str = "cpu") -> IntegerNetwork:
    """Build the published NITRO-D CNN (§4): conv blocks from ``features`` (an int is a 3×3
    conv block of that many channels, ``"M"`` a 2×2 max pooling, floor mode, on the feature
    path), then dense blocks, then the output layer.

    Dropout: ``conv_dropout`` after every conv block; ``dropout`` after every dense block,
    and, when ``conv_dropout`` is 0, once more just before the last layer of ``features``.
    The dense blocks learn twice per step, as in the published code (see :class:`LinearBlock`).
    Weights are drawn in forward order (each block's layer, then its head), then the output.
    """
    xp = get_namespace(device)
    path: list[Any] = []
    shape = tuple(int(s) for s in input_shape)
    for item in features:
        if item == "M":
            stage: Any = FeaturePool(shape)
        else:
            act = make_activation(activation, negative_slope_inv)
            stage = ConvBlock(shape, int(item), n_classes, act, scale_bits, rng, head_dim, head_pooling, xp)
        path.append(stage)
        shape = stage.output_shape(shape)
        if conv_dropout and item != "M":
            path.append(FeatureDropout(conv_dropout))
    if dropout and not conv_dropout:
        path.insert(len(path) - 1, FeatureDropout(dropout))
    dense, output = _dense_part(math.prod(shape), hidden_layer_sizes, n_classes, activation,
                                negative_slope_inv, scale_bits, dropout, False, rng, xp, updates_per_step=2)
    return IntegerNetwork(path + dense, output, 64 * n_classes if lr_amp is None else lr_amp,
                          fwd_decay_inv, head_decay_inv)


def _dense_part(in_features: int, hidden_layer_sizes: Sequence[int], n_classes: int, activation: str,
                negative_slope_inv: int, scale_bits: int, dropout: float, bias: bool,
                rng: np.random.Generator, xp: Any, updates_per_step: int = 1) -> tuple[list[Any], LinearHead]:
    """Dense local-loss blocks, each followed by dropout when ``dropout > 0``, and the output
    layer (same init law as the blocks). ``updates_per_step``: see :class:`LinearBlock`."""
    path: list[Any] = []
    for width in hidden_layer_sizes:
        act = make_activation(activation, negative_slope_inv)
        path.append(LinearBlock(in_features, width, n_classes, act, scale_bits, rng, bias, xp, updates_per_step))
        if dropout:
            path.append(FeatureDropout(dropout))
        in_features = width
    act = make_activation(activation, negative_slope_inv)
    output = LinearHead(in_features, n_classes, act.init_bound(in_features, n_classes), scale_bits, rng, bias, xp)
    return path, output
