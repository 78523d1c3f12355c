"""Export a fitted sknitro classifier as a self-contained integer inference model.

``export_integer_model(estimator, path)`` writes a directory:

- ``model.json``: the format (``"sknitro-integer-model"``, version
  :data:`EXPORT_FORMAT_VERSION`), the sknitro version, the classes, the input encoder,
  and the ordered list of inference layers with their integer constants;
- ``weights.npz``: the int32 weight (and bias) arrays, named by the layers' ``"weight"``
  and ``"bias"`` keys (``np.savez``: plain arrays, loadable with ``allow_pickle=False``);
- ``nitro_reader.py``: a standalone reader (NumPy only, no sknitro, no scikit-learn) whose
  ``load(path)`` returns a model with ``decision_function(X)`` and ``predict(X)`` giving
  the estimator's integers and labels.

Only inference is exported: the learning heads (training scaffolding) and dropout
(training only) are left out. Every operation after the input encoder is integer
arithmetic, spelled out in ``model.json``:

``linear``
    ``z = x @ W.T (+ b)``, ``W`` of shape ``(out, in)``, exact integer sums.
``conv2d``
    3×3, stride 1, zero padding 1, ``W`` of shape ``(F, C, 3, 3)``:
    ``z[n, f, i, j] = sum_{c, u, v} W[f, c, u, v] * xpad[n, c, i + u, j + v]`` where
    ``xpad`` is ``x`` padded with one row/column of zeros on every side (a
    cross-correlation: the kernel is not flipped).
``nitro_scale``
    ``y = clip(tdiv(z, divisor), -127, 127)`` as int8, ``tdiv`` the division truncated
    toward zero (``tdiv(-7, 4) == -1``), ``divisor = 2**scale_bits * fan_in``.
``activation``
    ``y = table[s + 128]``: a 256-entry int8 table over every int8 input ``s``.
``maxpool2d``
    ``kh×kw`` windows (2×2, or 1 on a side shorter than 2), stride = window, no padding;
    rows and columns that no whole window covers are dropped (floor mode:
    ``(H // kh) × (W // kw)`` outputs), and each output is its window's maximum.
``flatten``
    ``(n, C, H, W) -> (n, C * H * W)`` in row-major order: feature ``(c * H + i) * W + j``.

The last ``linear`` and ``nitro_scale`` are the output layer: their int8 result holds the
class scores; ``predict`` is the class of the highest score (the first one on ties).

The input encoder (:mod:`sknitro.encoding`) is stored as fitted: for uint8 images, each
channel's 256-entry int8 lookup table; for integer features, the per-feature integer mean
and MAD of the rule ``clip(tdiv((x - mean) * multiplier, mad), -127, 127)``; for float features,
the float mean and MAD (and their dtype) of ``clip(rint((x - mean) * (multiplier / mad)), -127, 127)``
(``multiplier``: the encoder's ``scale``, 26 for the MLP's features, 51 otherwise) --
the one float operation of an sknitro model, at the input boundary (JSON keeps these floats
exactly, so the reader rounds exactly as the estimator).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._base import BaseNitroClassifier
from .backend import to_host
from .encoding import MAD_SCALE
from .nn.blocks import ConvBlock, FeatureDropout, FeaturePool, LinearBlock
from .nn.layers import ACTIVATIONS, S_VALUES

EXPORT_FORMAT = "sknitro-integer-model"
EXPORT_FORMAT_VERSION = 2
READER_SOURCE = Path(__file__).with_name("_export_reader.py")

_ACTIVATION_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}
_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def export_integer_model(estimator: BaseNitroClassifier, path: str | PathLike) -> Path:
    """Write a fitted NITRO-D classifier as an integer inference model (see module doc).

    Parameters
    ----------
    estimator : NitroMLPClassifier or NitroCNNClassifier
        A fitted estimator (on any device).
    path : str or path-like
        The directory to write; created if needed. ``model.json``, ``weights.npz`` and
        ``nitro_reader.py`` in it are overwritten.

    Returns
    -------
    path : Path
        The export directory. ``nitro_reader.load(path)`` reads it back.

    Raises
    ------
    TypeError
        If ``estimator`` is not an sknitro classifier, or a class label cannot be stored
        in JSON (labels must be ints, bools, strings or finite floats).
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    FileExistsError
        If ``path`` exists and is not a directory.
    """
    if not isinstance(estimator, BaseNitroClassifier):
        raise TypeError(f"export_integer_model expects a fitted NitroMLPClassifier or NitroCNNClassifier, "
                        f"got {type(estimator).__name__}")
    check_is_fitted(estimator)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is not a directory; export_integer_model "
                              "writes a directory (model.json, weights.npz, nitro_reader.py)")
    model, arrays = describe_model(estimator)  # everything checked before anything is written
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "weights.npz", **arrays)
    (path / "model.json").write_text(_dump_json(model), encoding="utf-8")
    shutil.copyfile(READER_SOURCE, path / "nitro_reader.py")
    return path


def describe_model(estimator: BaseNitroClassifier) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``model.json`` content and the weight arrays of a fitted estimator.

    Returns
    -------
    model : dict
        JSON-serialisable description (format, classes, input encoder, layers).
    arrays : dict of str to ndarray
        The integer arrays named by the layers' ``"weight"``/``"bias"`` keys.
    """
    from . import __version__

    check_is_fitted(estimator)
    classes, classes_dtype = _json_classes(estimator.classes_)
    if hasattr(estimator, "image_shape_"):
        sample_shape = list(estimator.image_shape_)
    else:
        sample_shape = [int(estimator.n_features_in_)]
    layers, arrays = _describe_layers(estimator.network_, tuple(sample_shape))
    model = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "sknitro_version": __version__,
        "estimator": type(estimator).__name__,
        "classes": classes,
        "classes_dtype": classes_dtype,
        "input": _describe_encoder(estimator.encoder_, sample_shape),
        "layers": layers,
        "output": {
            "scores": "the int8 result of the last layer, shape (n, n_classes), in the order of 'classes'",
            "predict": "classes[argmax(scores, axis=1)], the first class on ties",
            "decision_function": "scores; for 2 classes scores[:, 1] - scores[:, 0] as int16",
        },
        "arithmetic": {
            "tdiv": "integer division truncated toward zero (C semantics): tdiv(-7, 4) == -1",
            "sums": "products and sums are exact integers (int64 is wide enough for every layer)",
            "training_only": "learning heads and dropout are training scaffolding and are not exported",
        },
    }
    return model, arrays


def _json_classes(classes: np.ndarray) -> tuple[list[Any], str]:
    """Class labels as JSON values, and the dtype that rebuilds ``classes_``."""
    values = []
    for label in classes.tolist():
        if isinstance(label, np.generic):  # object arrays keep NumPy scalars
            label = label.item()
        if isinstance(label, float) and not math.isfinite(label) or \
                not isinstance(label, (bool, int, float, str)):
            raise TypeError(
                f"class label {label!r} of type {type(label).__name__} cannot be stored in model.json: "
                "integer export supports int, bool, str and finite float labels; fit on such labels "
                "(for instance encoded with sklearn.preprocessing.LabelEncoder)")
        values.append(label)
    return values, classes.dtype.str


def _describe_encoder(encoder: Any, sample_shape: list[int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "sample_shape": sample_shape,
        "accepts": "X of shape (n, *sample_shape), or any (n, ...) with as many values per sample, "
                   "read in row-major order",
    }
    if encoder.kind == "image":
        entry.update({
            "encoding": "uint8_lookup",
            "rule": "x8 = tables[channel][x] for integer pixel values x in [0, 255]",
            "channel_axis": encoder.channel_axis,
            "channel_axis_meaning": "axis of the (n, *sample_shape) input holding the channels "
                                    "(tables[c] encodes channel c); null: tables[0] encodes every value",
            "tables": encoder.lookup_table.astype(int).tolist(),
            "mean": encoder.mean.astype(int).tolist(),
            "mad": encoder.mad.astype(int).tolist(),
            "tables_from": f"tables[c][x] = clip(tdiv((x - 128 - mean[c]) * {MAD_SCALE}, mad[c]), -127, 127)",
        })
    elif encoder.kind == "integer":
        entry.update({
            "encoding": "integer_mad",
            "rule": f"x8 = clip(tdiv((int64(x) - mean) * {encoder.scale}, mad), -127, 127), per feature",
            "multiplier": encoder.scale,
            "shape": list(encoder.mean.shape),
            "mean": encoder.mean.astype(int).ravel().tolist(),
            "mad": encoder.mad.astype(int).ravel().tolist(),
        })
    else:
        entry.update({
            "encoding": "float_mad",
            "rule": f"x8 = clip(rint((x - mean) * ({encoder.scale} / mad)), -127, 127), per feature, "
                    "with NumPy's type promotion of x against 'dtype' (float64 for float64 or integer x; "
                    "float32 only when both are float32), rint rounding half to even",
            "dtype": np.asarray(encoder.mean).dtype.name,
            "note": "the one float operation of the model, at the input boundary; everything after it "
                    "is integer",
            "multiplier": encoder.scale,
            "shape": list(np.shape(encoder.mean)),
            # float32 statistics convert exactly to Python floats, and JSON keeps those exactly
            "mean": np.asarray(encoder.mean).ravel().tolist(),
            "mad": np.asarray(encoder.mad).ravel().tolist(),
        })
    return entry


def _describe_layers(network: Any, sample_shape: tuple[int, ...]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The inference layers in order (what ``IntegerNetwork.forward`` computes)."""
    layers: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    shape = sample_shape

    def add_linear(layer: Any, name: str, block: Any) -> None:
        nonlocal shape
        if len(shape) != 1:
            layers.append({"type": "flatten", "block": block, "input_shape": list(shape),
                           "output_shape": [math.prod(shape)], "order": "row-major (C)"})
            shape = (math.prod(shape),)
        arrays[f"{name}.weight"] = np.asarray(to_host(layer.weight))
        bias = None
        if layer.bias is not None:
            bias = f"{name}.bias"
            arrays[bias] = np.asarray(to_host(layer.bias))
        layers.append({"type": "linear", "block": block, "weight": f"{name}.weight",
                       "shape": list(layer.weight.shape), "bias": bias, "input_shape": list(shape),
                       "output_shape": [layer.out_features]})
        shape = (layer.out_features,)

    def add_scale_and_activation(scale: int, activation: Any, block: Any) -> None:
        layers.append({"type": "nitro_scale", "block": block, "divisor": int(scale)})
        if activation is None:
            return
        # index s + 128: the engine's table (indexed by the bit pattern of s) in the order s = -128 .. 127
        table = activation.forward_table[S_VALUES.astype(np.int8).view(np.uint8)]
        entry = {"type": "activation", "block": block, "name": _ACTIVATION_NAMES.get(type(activation)),
                 "table": table.astype(int).tolist()}
        if hasattr(activation, "alpha"):
            entry["negative_slope_inv"] = int(activation.alpha)
        layers.append(entry)

    blocks = network.blocks
    for stage in network.path:
        if isinstance(stage, ConvBlock):
            i = blocks.index(stage)
            conv = stage.conv
            arrays[f"block{i}.weight"] = np.asarray(to_host(conv.weight))
            out_shape = (conv.out_channels, *shape[1:])
            layers.append({"type": "conv2d", "block": i, "weight": f"block{i}.weight",
                           "shape": list(conv.weight.shape), "bias": None, "kernel_size": conv.kernel,
                           "stride": 1, "padding": conv.padding, "padding_value": 0,
                           "input_shape": list(shape), "output_shape": list(out_shape)})
            shape = out_shape
            add_scale_and_activation(stage.scale, stage.activation, i)
        elif isinstance(stage, LinearBlock):
            i = blocks.index(stage)
            add_linear(stage.linear, f"block{i}", i)
            add_scale_and_activation(stage.scale, stage.activation, i)
        elif isinstance(stage, FeaturePool):
            kh, kw = stage.pool.window
            out_shape = stage.output_shape(shape)
            layers.append({"type": "maxpool2d", "block": None, "window": [kh, kw], "stride": [kh, kw],
                           "padding": "none; rows and columns that no whole window covers are dropped "
                                      "(floor mode)",
                           "input_shape": list(shape), "output_shape": list(out_shape)})
            shape = out_shape
        elif not isinstance(stage, FeatureDropout):  # dropout: the identity at inference
            raise TypeError(f"cannot export a layer of type {type(stage).__name__}")
    add_linear(network.output.linear, "output", "output")
    add_scale_and_activation(network.output.scale, None, "output")
    return layers, arrays


def _dump_json(model: dict) -> str:
    """Indented JSON with each list of numbers on one line (tables stay readable)."""
    text = json.dumps(model, indent=2, ensure_ascii=False)

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(v.strip() for v in match.group(1).split(",")) + "]"

    return _NUMBER_LIST.sub(one_line, text) + "\n"
