"""Replay recorded training traces of the published NITRO-D code, bit for bit.

A trace is a ``.npz`` file with a ``.json`` beside it (the format of the traces shipped in
``tests/data/``): the network's configuration as the published code writes it, its initial
weights, the int8 batches it was trained on, its outputs before each step, its weights after
some steps, and its output on one more batch after training. :func:`replay_trace` builds the
same network with sknitro's engine, loads the initial weights, trains on the same batches and
compares every recorded array::

    from sknitro.reference import replay_trace

    report = replay_trace("tests/data/nitro_d_mlp.npz")   # in a clone of the repository
    report.identical, report.steps                        # (True, 12)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .nn.network import IntegerNetwork, build_cnn, build_mlp
from .nn.optim import IntegerSGD
from .nn.training import one_hot

__all__ = ["Mismatch", "TraceReport", "replay_trace"]

_POOL = "MaxPool2d"
_CONV = "Conv2d"


@dataclass(frozen=True)
class Mismatch:
    """One recorded array that sknitro's replay did not reproduce.

    Attributes
    ----------
    step : int or str
        The training step after which the array was recorded (1-based), ``"init"`` for the
        network's structure, or ``"eval"`` for the output on the evaluation batch.
    array : str
        The layer name of the trace, or ``"output"``.
    detail : str
        What differs: the number of differing values and the largest difference, or the shapes.
    """

    step: int | str
    array: str
    detail: str


@dataclass
class TraceReport:
    """Result of :func:`replay_trace`.

    Attributes
    ----------
    identical : bool
        True when every recorded array was reproduced exactly (no mismatch).
    mismatches : list of Mismatch
        Every array that differs, in the order the replay met them.
    steps : int
        Training steps replayed.
    compared : int
        Arrays compared (outputs and weights).
    """

    mismatches: list[Mismatch] = field(default_factory=list)
    steps: int = 0
    compared: int = 0

    @property
    def identical(self) -> bool:
        return not self.mismatches


def replay_trace(path: str | os.PathLike, config: str | os.PathLike | None = None) -> TraceReport:
    """Replay a recorded NITRO-D training trace with sknitro's engine.

    Parameters
    ----------
    path : path-like
        The trace (``.npz``).
    config : path-like, default=None
        Its configuration; by default the ``.json`` of the same name beside the trace.

    Returns
    -------
    TraceReport
        ``identical`` and the list of ``mismatches``.

    Raises
    ------
    ValueError
        If the configuration is one sknitro cannot build (unknown layer kinds, bias,
        dropout: the published code's random masks cannot be replayed).
    """
    path = Path(path)
    config_path = Path(config) if config is not None else path.with_suffix(".json")
    spec = json.loads(config_path.read_text())
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    names = list(spec["layer_names"])
    n_classes = int(spec["layer_shapes"][names[-1]][0])
    network = _build(spec, arrays["x"].shape[1:], n_classes)
    layers = _layers_by_name(network, names)

    report = TraceReport()
    for name, layer in layers.items():
        init = arrays[f"init/{name}"]
        if init.shape != tuple(layer.weight.shape):
            report.mismatches.append(Mismatch("init", name, f"shape {tuple(layer.weight.shape)}, "
                                                            f"trace {init.shape}"))
    if report.mismatches:
        return report
    network.set_weights([arrays[f"init/{name}"] for name in _weight_order(network, layers)])

    batch_size, lr_inv = int(spec["batch_size"]), int(spec["lr_inv"])
    sgd = IntegerSGD(lr_inv)
    x, y = arrays["x"].astype(np.int8), arrays["y"].astype(np.int64)
    targets = one_hot(y, n_classes, int(spec["target_value"]))
    rng = np.random.default_rng(0)  # unused: the replayed networks draw nothing
    steps = int(spec.get("steps", len(x) // batch_size))
    for step in range(1, steps + 1):
        batch = slice((step - 1) * batch_size, step * batch_size)
        _compare(report, step, "output", network.forward(x[batch]), arrays.get(f"step{step:02d}/output"))
        network.train_step(x[batch], targets[batch], y[batch], sgd, rng)
        for name, layer in layers.items():
            _compare(report, step, name, layer.weight, arrays.get(f"step{step:02d}/{name}"))
    if "eval/x" in arrays:
        _compare(report, "eval", "output", network.forward(arrays["eval/x"].astype(np.int8)),
                 arrays["eval/output"])
    report.steps = steps
    return report


def _build(spec: dict[str, Any], sample_shape: tuple[int, ...], n_classes: int) -> IntegerNetwork:
    """The network the configuration describes, with sknitro's builders."""
    if spec.get("bias", False):
        raise ValueError("cannot replay a trace with bias: the published networks have none")
    if spec.get("dropout", 0) or spec.get("conv_dropout", 0):
        raise ValueError("cannot replay a trace with dropout: its masks come from the recording "
                         "program's random generator")
    common = {
        "activation": "nitro_relu",
        "negative_slope_inv": int(spec.get("nitro_leaky_relu_alpha_inv", 4)),
        "scale_bits": int(spec.get("scale_bits", 8)),
        "lr_amp": int(spec["lr_amp"]),
        "fwd_decay_inv": int(spec["fwd_decay_inv"]),
        "head_decay_inv": int(spec["head_decay_inv"]),
        "rng": np.random.default_rng(0),  # the weights are replaced by the trace's
    }
    if "fe_architecture" not in spec:
        return build_mlp(int(np.prod(sample_shape)), [int(h) for h in spec["hidden"]], n_classes, **common)
    features: list[int | str] = []
    for layer in spec["fe_architecture"]:
        kind = layer[0]
        if kind == _CONV and tuple(layer[2:]) == (3, 1, 1):
            features.append(int(layer[1]))
        elif kind == _POOL and tuple(layer[1:]) == (2, 2):
            features.append("M")
        else:
            raise ValueError(f"cannot replay feature layer {layer!r}: sknitro builds 3x3 convolutions "
                             "with stride 1 and padding 1, and 2x2 max pooling with stride 2")
    if len(sample_shape) != 3:
        raise ValueError(f"a CNN trace needs (n, C, H, W) inputs, got samples of shape {sample_shape}")
    return build_cnn(tuple(int(s) for s in sample_shape), features,
                     [int(h) for h in spec.get("dense_hidden", ())], n_classes,
                     head_dim=int(spec["head_dim"]), head_pooling=spec.get("head_pooling", "max"), **common)


def _layers_by_name(network: IntegerNetwork, names: list[str]) -> dict[str, Any]:
    """The trace's layer names matched to sknitro's layers.

    The published code names each block's forward layer ``*_encoder_*`` and its head
    ``linear_pred_*``, block by block; the last name is the output layer.
    """
    encoders = [n for n in names[:-1] if "_encoder_" in n]
    heads = [n for n in names[:-1] if "linear_pred_" in n]
    blocks = network.blocks
    if len(encoders) != len(blocks) or len(heads) != len(blocks) or len(encoders) + len(heads) + 1 != len(names):
        raise ValueError(f"the trace names {len(encoders)} blocks and {len(heads)} heads, "
                         f"the configuration builds {len(blocks)} blocks")
    layers = {name: block.forward_layer for name, block in zip(encoders, blocks)}
    layers.update({name: block.head.linear for name, block in zip(heads, blocks)})
    layers[names[-1]] = network.output.linear
    return layers


def _weight_order(network: IntegerNetwork, layers: dict[str, Any]) -> list[str]:
    """The trace's names in the order of ``network.get_weights()``."""
    by_layer = {id(layer): name for name, layer in layers.items()}
    return [by_layer[id(layer)] for layer in network.layers()]


def _compare(report: TraceReport, step: int | str, name: str, actual: Any, expected: np.ndarray | None) -> None:
    if expected is None:
        return
    report.compared += 1
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        report.mismatches.append(Mismatch(step, name, f"shape {actual.shape}, trace {expected.shape}"))
        return
    diff = actual.astype(np.int64) - expected.astype(np.int64)
    if diff.any():
        report.mismatches.append(Mismatch(step, name, f"{int(np.count_nonzero(diff))} of {diff.size} values "
                                                      f"differ, by up to {int(np.abs(diff).max())}"))
