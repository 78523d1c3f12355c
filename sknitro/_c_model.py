"""``model.h`` / ``model.c`` of an exported C project: a network graph as C data.

The runtime (``c_runtime/nitro.c``) is the same for every model; what differs is written
here from the engine's own description of the network (:meth:`IntegerNetwork.graph`): the
weights as ``const`` arrays in the smallest integer type that holds each layer, the scaling
divisors, the activation tables, the input encoder, and every buffer, statically sized for
this model. The training buffers are compiled only with ``-DNITRO_TRAINING``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .nn.graph import Block, Conv3x3, Dropout, Head, NetworkGraph, Pool

INT64_MAX = 2**63 - 1
ACTIVATION_BOUND = 127  # every encoded input and activation lies in [-127, 127]
MAX_CLASSES = 256  # train.bin stores class indices as uint8
# The runtime sums a layer's products in int64: exact for any int32 weights while
# fan_in * max|input| * (2**31 - 1) < 2**63, max|input| at most 127 * 20 (dropout's rescale).
MAX_FAN_IN = (2**63 - 1) // (127 * 20 * (2**31 - 1))
_C_TYPES = ((np.int8, "int8_t", 1), (np.int16, "int16_t", 2), (np.int32, "int32_t", 4))
_POOL_KINDS = {"max": "NITRO_POOL_MAX", "avg": "NITRO_POOL_AVG"}


@dataclass
class TrainingSettings:
    """What ``train.c`` needs of the estimator besides its network."""

    lr_inv: int
    batch_size: int  # 0: "auto"
    auto_batch_max: int
    auto_batch_min: int
    target_value: int

    @property
    def max_batch(self) -> int:
        return self.batch_size or self.auto_batch_max


@dataclass
class InputEncoding:
    """uint8 pixels through per-channel tables (``tables`` of shape (n, 256)), or None:
    the program reads int8 features that Python encoded."""

    tables: np.ndarray | None
    values_per_table: int


@dataclass
class _Writer:
    """Collects the C definitions of model.c, each array under a unique name."""

    lines: list[str] = field(default_factory=list)
    training: list[str] = field(default_factory=list)

    def const_array(self, name: str, values: np.ndarray, c_type: str) -> str:
        self.lines.append(f"static const {c_type} {name}[{max(values.size, 1)}] = {{\n{_numbers(values)}\n}};")
        return name

    def buffer(self, name: str, c_type: str, size: int, training: bool = False) -> str:
        (self.training if training else self.lines).append(f"static {c_type} {name}[{max(size, 1)}];")
        return name


def _numbers(values: np.ndarray, per_line: int = 24) -> str:
    flat = [str(v) for v in np.asarray(values).ravel().tolist()] or ["0"]
    return ",\n".join("    " + ", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line))


def smallest_type(weight: np.ndarray) -> tuple[str, int]:
    """The narrowest of int8, int16, int32 holding every value of ``weight``: C name, bytes."""
    low, high = (int(weight.min()), int(weight.max())) if weight.size else (0, 0)
    for dtype, c_type, size in _C_TYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return c_type, size
    raise ValueError("weights beyond int32")


def check_exportable(graph: NetworkGraph) -> None:
    """Raise ValueError for a network the C runtime does not run."""
    if graph.n_classes > MAX_CLASSES:
        raise ValueError(f"the C export handles up to {MAX_CLASSES} classes (train.bin stores uint8 class "
                         f"indices); this model has {graph.n_classes}")
    fan_ins = [graph.output.dense.weight.shape[1]]
    for stage in graph.path:
        if isinstance(stage, Block) and isinstance(stage.layer, Conv3x3) and stage.layer.padding != 1:
            raise ValueError(f"the C runtime runs 3x3 convolutions with padding 1, not {stage.layer.padding}")
        if isinstance(stage, Block):
            fan_ins += [math.prod(stage.layer.weight.shape[1:]), stage.head.dense.weight.shape[1]]
    if max(fan_ins) > MAX_FAN_IN:
        raise ValueError(f"a layer reads {max(fan_ins)} values; the C runtime's int64 sums are exact up to "
                         f"{MAX_FAN_IN}")


def write_model(graph: NetworkGraph, encoding: InputEncoding, training: TrainingSettings,
                description: str) -> tuple[str, str]:
    """The text of ``model.h`` and ``model.c``."""
    check_exportable(graph)
    w = _Writer()
    sizes = _Sizes(graph)
    matrices: list[str] = []

    def matrix(name: str, weight: np.ndarray) -> str:
        rows, cols = weight.shape[0], int(math.prod(weight.shape[1:]))
        c_type, size = smallest_type(weight)
        data = w.const_array(f"{name}_WEIGHTS", weight, c_type)
        ram = w.buffer(f"{name}_RAM", "int32_t", weight.size, training=True)
        matrices.append(name)
        bound = int(np.abs(weight.astype(np.int64)).max()) if weight.size else 0
        return (f"{{.data = {data}, .ram = TRAINING({ram}), .rows = {rows}, .cols = {cols}, "
                f".bound = {bound}, .bytes = {size}}}")

    def pool(spec: Pool | None) -> str:
        if spec is None:
            return "{.kind = NITRO_POOL_NONE}"
        (kh, kw), (ph, pw) = spec.window, spec.padding
        c, h, wd = spec.input_shape
        _, oh, ow = spec.output_shape
        return (f"{{.kind = {_POOL_KINDS[spec.kind]}, .kh = {kh}, .kw = {kw}, .ph = {ph}, .pw = {pw}, "
                f".c = {c}, .h = {h}, .w = {wd}, .oh = {oh}, .ow = {ow}}}")

    def head(spec: Head, name: str) -> str:
        return f"{{.pool = {pool(spec.pool)}, .dense = {matrix(name, spec.dense.weight)}, .scale = {spec.scale}}}"

    activations: dict[tuple, str] = {}
    stages = []
    bound = ACTIVATION_BOUND
    for index, stage in enumerate(graph.path):
        in_shape = _chw(stage.input_shape if not isinstance(stage, Dropout) else stage.shape)
        if isinstance(stage, Block):
            key = (stage.activation.name, stage.activation.forward_table.tobytes())
            if key not in activations:
                k = len(activations)
                forward = w.const_array(f"ACTIVATION{k}_FORWARD", stage.activation.forward_table, "int8_t")
                multiplier = w.const_array(f"ACTIVATION{k}_MULTIPLIER", stage.activation.backward_multiplier,
                                           "int32_t")
                w.lines.append(f"static const nitro_activation ACTIVATION{k} = "
                               f"{{{forward}, {multiplier}, {stage.activation.backward_divisor}}};")
                activations[key] = f"ACTIVATION{k}"
            kind = "NITRO_CONV_BLOCK" if isinstance(stage.layer, Conv3x3) else "NITRO_DENSE_BLOCK"
            out_shape = _chw(stage.output_shape)
            s_size = training.max_batch * math.prod(out_shape)
            batch_s = w.buffer(f"STAGE{index}_BATCH_S", "int8_t", s_size, training=True)
            stages.append(
                f"    {{.kind = {kind}, {_shape_fields(in_shape, out_shape)}, .input_bound = {bound},\n"
                f"     .layer = {matrix(f'BLOCK{index}', stage.layer.weight)},\n"
                f"     .scale = {stage.scale}, .activation = &{activations[key]},\n"
                f"     .head = {head(stage.head, f'HEAD{index}')},\n"
                f"     .updates_per_step = {stage.updates_per_step}, .batch_s = TRAINING({batch_s})}}")
            bound = ACTIVATION_BOUND
        elif isinstance(stage, Pool):
            stages.append(f"    {{.kind = NITRO_FEATURE_POOL, {_shape_fields(in_shape, _chw(stage.output_shape))}, "
                          f".input_bound = {bound}, .pool = {pool(stage)}}}")
        else:
            stages.append(f"    {{.kind = NITRO_DROPOUT, {_shape_fields(in_shape, in_shape)}, .input_bound = {bound}, "
                          f".keep_percent = {stage.keep_percent}, .rescale = {stage.rescale}}}")
            bound = bound * stage.rescale // 1000
    output = head(graph.output, "OUTPUT")

    tables = "NULL"
    if encoding.tables is not None:
        tables = w.const_array("ENCODER_TABLES", encoding.tables, "int8_t")
    buffers = sizes.buffers(w, training)
    in_c, in_h, in_w = _chw(graph.input_shape)
    body = "\n".join(w.lines)
    training_buffers = "\n".join(w.training)
    stage_list = ",\n".join(stages) if stages else "    {.kind = 0}"
    model_c = f"""/* model.c: {description}
 * Generated by sknitro.export.export_c: the network's weights, constants and buffers, read by
 * the runtime in nitro.c. Training buffers exist only with -DNITRO_TRAINING. */
#include "model.h"

#ifdef NITRO_TRAINING
#define TRAINING(buffer) buffer
#else
#define TRAINING(buffer) NULL
#endif

{body}

#ifdef NITRO_TRAINING
{training_buffers}
#endif

static nitro_stage STAGES[] = {{
{stage_list}
}};

nitro_model NITRO_MODEL = {{
    .n_stages = {len(stages)}, .stages = STAGES,
    .output = {output},
    .in_c = {in_c}, .in_h = {in_h}, .in_w = {in_w}, .input_size = {in_c * in_h * in_w},
    .n_classes = {graph.n_classes}, .output_input_bound = {bound},
    .input_uint8 = {int(encoding.tables is not None)}, .tables = {tables},
    .values_per_table = {encoding.values_per_table},
    .lr_inv = {min(training.lr_inv, INT64_MAX)}, .lr_amp = {graph.lr_amp},
    .fwd_decay_inv = {graph.fwd_decay_inv}, .head_decay_inv = {graph.head_decay_inv},
    .batch_size = {training.batch_size}, .auto_batch_max = {training.auto_batch_max},
    .auto_batch_min = {training.auto_batch_min}, .max_batch = {training.max_batch},
    .target_value = {training.target_value},
    .buffers = {buffers}
}};
"""
    model_h = f"""/* model.h: {description}
 * Generated by sknitro.export.export_c. */
#ifndef NITRO_MODEL_H
#define NITRO_MODEL_H

#include "nitro.h"

#define NITRO_INPUT_SIZE {in_c * in_h * in_w}
#define NITRO_N_CLASSES {graph.n_classes}
#define NITRO_N_MATRICES {len(matrices)}

extern nitro_model NITRO_MODEL;

#endif
"""
    return model_h, model_c


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(shape) if len(shape) == 3 else (int(math.prod(shape)), 1, 1)


def _shape_fields(in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> str:
    return (f".in_c = {in_shape[0]}, .in_h = {in_shape[1]}, .in_w = {in_shape[2]}, "
            f".out_c = {out_shape[0]}, .out_h = {out_shape[1]}, .out_w = {out_shape[2]}")


class _Sizes:
    """The sizes of the runtime's buffers for one graph."""

    def __init__(self, graph: NetworkGraph) -> None:
        blocks = graph.blocks
        self.input_size = math.prod(graph.input_shape)
        self.max_map = graph.max_map_size()
        self.max_block = max([math.prod(b.output_shape) for b in blocks], default=1)
        self.max_plane = max([b.output_shape[1] * b.output_shape[2] for b in blocks
                              if isinstance(b.layer, Conv3x3)], default=1)
        heads = [b.head.dense.weight for b in blocks] + [graph.output.dense.weight]
        self.max_head_input = max(h.shape[1] for h in heads)
        self.max_head = max(h.size for h in heads)
        conv = [b for b in blocks if isinstance(b.layer, Conv3x3)]
        dense = [b for b in blocks if not isinstance(b.layer, Conv3x3)]
        # a conv layer's G is summed whole; a dense layer's one row at a time, from the batch's
        # deltas and inputs (its G would be the largest buffer of a dense network)
        self.max_layer = max([b.layer.weight.size for b in conv] + [b.layer.weight.shape[1] for b in dense],
                             default=1)
        self.max_dense_width = max([b.layer.weight.shape[0] for b in dense], default=1)
        self.max_dense_input = max([b.layer.weight.shape[1] for b in dense], default=1)

    def buffers(self, w: _Writer, training: TrainingSettings) -> str:
        batch = training.max_batch
        fields = {
            "map_a": w.buffer("MAP_A", "int16_t", self.max_map),
            "map_b": w.buffer("MAP_B", "int16_t", self.max_map),
            "pre_activation": w.buffer("PRE_ACTIVATION", "int8_t", self.max_block),
            "acc": w.buffer("ACCUMULATOR", "int64_t", self.max_plane),
            "acc32": w.buffer("ACCUMULATOR32", "int32_t", self.max_plane),
        }
        for name, c_type, size in (("batch_x", "int8_t", batch * self.input_size),
                                   ("batch_labels", "uint8_t", batch),
                                   ("block_out", "int16_t", self.max_block),
                                   ("head_in", "int16_t", self.max_head_input),
                                   ("head_grad", "int64_t", self.max_head_input),
                                   ("delta", "int64_t", self.max_block),
                                   ("grad_head", "int64_t", self.max_head),
                                   ("grad_layer", "int64_t", self.max_layer),
                                   ("batch_delta", "int64_t", batch * self.max_dense_width),
                                   ("batch_input", "int16_t", batch * self.max_dense_input)):
            fields[name] = f"TRAINING({w.buffer(name.upper(), c_type, size, training=True)})"
        return "{" + ", ".join(f".{k} = {v}" for k, v in fields.items()) + "}"
