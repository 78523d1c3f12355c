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
from .encoding import MAD_SCALE
from .nn.graph import Activation, Block, Conv3x3, NetworkGraph, Pool

EXPORT_FORMAT = "sknitro-integer-model"
EXPORT_FORMAT_VERSION = 2
READER_SOURCE = Path(__file__).with_name("_export_reader.py")

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
    path = _export_folder(estimator, path, "export_integer_model",
                          "writes a directory (model.json, weights.npz, nitro_reader.py)")
    model, arrays = describe_model(estimator)  # everything checked before anything is written
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "weights.npz", **arrays)
    (path / "model.json").write_text(_dump_json(model), encoding="utf-8")
    shutil.copyfile(READER_SOURCE, path / "nitro_reader.py")
    return path


def _export_folder(estimator: Any, path: str | PathLike, function: str, writes: str) -> Path:
    """``path`` as a Path, once ``estimator`` is a fitted sknitro classifier and ``path`` is
    not a file (TypeError, NotFittedError, FileExistsError naming ``function`` otherwise)."""
    if not isinstance(estimator, BaseNitroClassifier):
        raise TypeError(f"{function} expects a fitted NitroMLPClassifier or NitroCNNClassifier, "
                        f"got {type(estimator).__name__}")
    check_is_fitted(estimator)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is not a directory; {function} {writes}")
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
    layers, arrays = _describe_layers(estimator.network_.graph())
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


def _describe_layers(graph: NetworkGraph) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The inference layers in order (what ``IntegerNetwork.forward`` computes), from the
    network's own graph."""
    layers: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    shape = tuple(graph.input_shape)

    def add_linear(weight: np.ndarray, name: str, block: Any) -> None:
        nonlocal shape
        if len(shape) != 1:
            layers.append({"type": "flatten", "block": block, "input_shape": list(shape),
                           "output_shape": [math.prod(shape)], "order": "row-major (C)"})
            shape = (math.prod(shape),)
        arrays[f"{name}.weight"] = weight
        layers.append({"type": "linear", "block": block, "weight": f"{name}.weight",
                       "shape": list(weight.shape), "bias": None, "input_shape": list(shape),
                       "output_shape": [weight.shape[0]]})
        shape = (weight.shape[0],)

    def add_scale_and_activation(scale: int, activation: Activation | None, block: Any) -> None:
        layers.append({"type": "nitro_scale", "block": block, "divisor": int(scale)})
        if activation is None:
            return
        entry = {"type": "activation", "block": block, "name": activation.name,
                 "table": activation.forward_table.astype(int).tolist()}  # index s + 128
        if activation.negative_slope_inv is not None:
            entry["negative_slope_inv"] = activation.negative_slope_inv
        layers.append(entry)

    index = 0
    for stage in graph.path:
        if isinstance(stage, Block) and isinstance(stage.layer, Conv3x3):
            conv = stage.layer
            arrays[f"block{index}.weight"] = conv.weight
            layers.append({"type": "conv2d", "block": index, "weight": f"block{index}.weight",
                           "shape": list(conv.weight.shape), "bias": None, "kernel_size": 3,
                           "stride": 1, "padding": conv.padding, "padding_value": 0,
                           "input_shape": list(shape), "output_shape": list(stage.output_shape)})
            shape = tuple(stage.output_shape)
        elif isinstance(stage, Block):
            add_linear(stage.layer.weight, f"block{index}", index)
        elif isinstance(stage, Pool):
            kh, kw = stage.window
            layers.append({"type": "maxpool2d", "block": None, "window": [kh, kw], "stride": [kh, kw],
                           "padding": "none; rows and columns that no whole window covers are dropped "
                                      "(floor mode)",
                           "input_shape": list(shape), "output_shape": list(stage.output_shape)})
            shape = tuple(stage.output_shape)
            continue
        else:  # dropout: the identity at inference
            continue
        add_scale_and_activation(stage.scale, stage.activation, index)
        index += 1
    add_linear(graph.output.dense.weight, "output", "output")
    add_scale_and_activation(graph.output.scale, None, "output")
    return layers, arrays


def _dump_json(model: dict) -> str:
    """Indented JSON with each list of numbers on one line (tables stay readable)."""
    text = json.dumps(model, indent=2, ensure_ascii=False)

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(v.strip() for v in match.group(1).split(",")) + "]"

    return _NUMBER_LIST.sub(one_line, text) + "\n"


# ---------------------------------------------------------------------------------------
# C: a self-contained integer-only project (sknitro/c_runtime + model.c), for any C99
# compiler, microcontrollers without an FPU included; see docs/user_guide/microcontroller.rst

C_RUNTIME = Path(__file__).with_name("c_runtime")
C_RUNTIME_FILES = ("nitro.h", "nitro.c", "predict.c", "train.c", "mcu.c", "mcu.h", "Makefile")
C_RULES = Path(__file__).with_name("_rules.h")  # the engine's C rules, shared with the extension
C_ESTIMATOR_FILE = "estimator.joblib"


def export_c(estimator: BaseNitroClassifier, folder: str | PathLike) -> Path:
    """Write a fitted classifier as a C99 project that predicts and goes on training.

    The folder holds the runtime (``nitro.h``, ``nitro.c``, ``nitro_rules.h``), the model
    (``model.h``, ``model.c``: weights as ``const`` arrays in the smallest integer type
    holding each layer, scaling divisors, activation tables, the uint8 encoder's tables,
    static buffers), the programs ``predict.c`` and ``train.c``, a ``Makefile`` (``make``:
    host programs; ``make mcu``: Cortex-M3 ELF files; ``make run-mcu``: run them under QEMU),
    and ``estimator.joblib``, the estimator itself, which :func:`load_c_weights` fills with
    the weights that ``train`` writes. Integer arithmetic only: no ``float``, no ``double``,
    no ``malloc``.

    Parameters
    ----------
    estimator : NitroMLPClassifier or NitroCNNClassifier
        A fitted estimator.
    folder : str or path-like
        Created if needed; the files above are overwritten.

    Returns
    -------
    folder : Path

    Raises
    ------
    TypeError
        If ``estimator`` is not an sknitro classifier.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    ValueError
        If the network is one the C runtime does not run exactly: more than 256 classes, or
        a layer reading more than 1.69 million values (its int64 sums could wrap).
    FileExistsError
        If ``folder`` exists and is not a directory.
    """
    import joblib

    from ._base import AUTO_BATCH_MIN, AUTO_BATCH_SIZE
    from ._c_model import InputEncoding, TrainingSettings, write_model

    folder = _export_folder(estimator, folder, "export_c", "writes a C project there")
    graph = estimator.network_.graph()
    encoder = estimator.encoder_
    if encoder.kind == "image":
        tables = np.asarray(encoder.lookup_table)
        encoding = InputEncoding(tables, math.prod(graph.input_shape) // tables.shape[0])
    else:
        encoding = InputEncoding(None, 1)
    batch_size = 0 if estimator.batch_size == "auto" else int(estimator.batch_size)
    training = TrainingSettings(int(estimator.lr_inv_), batch_size, AUTO_BATCH_SIZE, AUTO_BATCH_MIN,
                                int(estimator.target_value))
    description = (f"{type(estimator).__name__}, {graph.n_classes} classes, "
                   f"input {'uint8' if encoding.tables is not None else 'int8 (encoded)'} "
                   f"x {math.prod(graph.input_shape)}")
    model_h, model_c = write_model(graph, encoding, training, description)  # checks before writing
    folder.mkdir(parents=True, exist_ok=True)
    for name in C_RUNTIME_FILES:
        shutil.copyfile(C_RUNTIME / name, folder / name)
    shutil.copyfile(C_RULES, folder / "nitro_rules.h")
    (folder / "model.h").write_text(model_h, encoding="utf-8")
    (folder / "model.c").write_text(model_c, encoding="utf-8")
    joblib.dump(estimator, folder / C_ESTIMATOR_FILE)
    return folder


def encode_for_c(estimator: BaseNitroClassifier, X: Any, path: str | PathLike, y: Any = None) -> Path:
    """Write ``X`` (and ``y``) as the exported C programs read them.

    Without ``y``: ``input.bin`` for ``predict``: one row per sample, row-major -- the uint8
    values themselves for a model fitted on uint8 data (the C program encodes them), else
    the estimator's int8 encoding of the features (the one float step stays in Python).
    With ``y``: ``train.bin`` for ``train``: those rows, then one uint8 class index (into
    ``classes_``) per sample.

    Parameters
    ----------
    estimator : NitroMLPClassifier or NitroCNNClassifier
        The fitted estimator that was exported.
    X : array-like of shape (n_samples, ...)
        As for ``predict``.
    path : str or path-like
        The file to write.
    y : array-like of shape (n_samples,), default=None
        Labels, all in ``classes_``.

    Returns
    -------
    path : Path
    """
    check_is_fitted(estimator)
    X = estimator._validate_X(X, reset=False)
    n = X.shape[0]
    if estimator.encoder_.kind == "image":
        if X.dtype != np.uint8:
            raise ValueError(f"this model was fitted on uint8 data, and its C program reads uint8 rows; "
                             f"X has dtype {X.dtype}")
        rows = np.ascontiguousarray(X).reshape(n, -1)
    else:
        rows = estimator.encoder_.transform(X).reshape(n, -1)
    data = rows.tobytes()
    if y is not None:
        y = np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"y must have one label per sample of X: shape ({n},), got {y.shape}")
        data += estimator._class_indices(y).astype(np.uint8).tobytes()
    path = Path(path)
    path.write_bytes(data)
    return path


def load_c_weights(source: str | PathLike, estimator: BaseNitroClassifier | None = None) -> BaseNitroClassifier:
    """A fitted estimator with the weights that the exported ``train`` program wrote.

    Parameters
    ----------
    source : str or path-like
        The exported folder (its ``weights.bin``) or a ``weights.bin`` file.
    estimator : NitroMLPClassifier or NitroCNNClassifier, default=None
        The estimator that was exported. By default, the ``estimator.joblib`` that
        :func:`export_c` saved next to ``weights.bin`` (a pickle: load folders you trust).

    Returns
    -------
    estimator : NitroMLPClassifier or NitroCNNClassifier
        A copy of ``estimator`` whose ``weights_`` and ``head_weights_`` are those of the file;
        everything else (encoder, classes, ``lr_inv_``, counters) is the exported model's.

    Raises
    ------
    ValueError
        If the file does not hold exactly the model's weights (its size differs).
    """
    import copy

    import joblib

    source = Path(source)
    weights_path = source / "weights.bin" if source.is_dir() else source
    if estimator is None:
        estimator = joblib.load(weights_path.parent / C_ESTIMATOR_FILE)
    check_is_fitted(estimator)
    shapes = [w.shape for w in estimator.weights_] + [w.shape for w in estimator.head_weights_]
    sizes = [math.prod(shape) for shape in shapes]
    data = np.fromfile(weights_path, dtype="<i4")
    if data.size * 4 != weights_path.stat().st_size or data.size != sum(sizes):
        raise ValueError(f"{weights_path} holds {weights_path.stat().st_size} bytes; this model's weights take "
                         f"{4 * sum(sizes)} (int32 little-endian: weights_, then head_weights_)")
    arrays = np.split(data.astype(np.int32), np.cumsum(sizes)[:-1])
    arrays = [a.reshape(shape) for a, shape in zip(arrays, shapes)]
    n_blocks = len(estimator.head_weights_)
    forward, output, heads = arrays[:n_blocks], arrays[n_blocks], arrays[n_blocks + 1:]
    result = copy.deepcopy(estimator)
    result.network_.set_weights(forward + heads + [output])  # the network's layers() order
    return result
