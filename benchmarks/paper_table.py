"""Benchmark: the published NITRO-D configurations (algorithm.md §8), with float peers.

Every row of the paper's table runs by name: mlp-mnist, mlp-fashion, mlp1024-mnist,
mlp1024-fashion, mlp-cifar10 (RGB, 3072 inputs, as published; mlp-cifar10-grey is the grey
option), vgg8b-mnist, vgg8b-fashion, vgg8b-cifar10, vgg11b-cifar10. The integer network gets the
published hyperparameters (batch 64, lr_inv 512, lr_amp 640, NITRO-ReLU alpha 4, the row's
fwd/head weight decay, dropout and augmentation, head_dim 4096 for the VGGs) and the
validation-driven schedule of ``bench_mlp_fashion.py --full``: 10% validation split, lr_inv x3
after 15 epochs without a gain of one point, early stopping after 35 epochs without a new best,
at most ``--epochs`` epochs, and the best validated model is kept. The test set decides
nothing: it is scored after every epoch for the report, and once on the kept model.

For the MLP rows two float peers run in the same process, seed by seed, interleaved:

- ``float-bp``: scikit-learn's ``MLPClassifier`` (backpropagation, same hidden sizes,
  batch 64, adam, inputs scaled to [0, 1], ``early_stopping=True``, ``validation_fraction=0.1``,
  stopping after 35 epochs without a new best validation accuracy, same maximum of epochs,
  the best validated model kept; adam has no plateau schedule);
- ``float-les``: ``float_les.FloatLESClassifier``, the float32 local-loss network of the same
  architecture (squared error of each head to the one-hot target, gradients stopped at block
  boundaries, adam, He init) under the same schedule as the integer network.

Per method: seconds per epoch (median after a warm-up epoch, pooled over seeds; validation and
test scoring not included), throughput, analytic FLOPs per epoch against the float64 GEMM
roofline measured before and after the runs, peak memory of training (child processes, run
before the parent loads data), test accuracy per epoch and of the final model (mean ± std
over seeds), time to ``--target`` test accuracy. Results go to ``<out>/paper_<config>.json``,
``.md`` and ``_accuracy.png`` / ``_epoch_time.png`` / ``_memory.png``; ``paper_table.md``
collects every ``paper_*.json`` of ``<out>`` in one table.

Run from the repository root (on a shared machine, one BLAS thread)::

    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
    python benchmarks/paper_table.py --list                          # configurations, data
    python benchmarks/paper_table.py --config mlp-fashion --seeds 3 --threads 1
    python benchmarks/paper_table.py --config mlp-fashion --epochs 3 --n-train 5000 \\
        --n-test 1000 --out /tmp/paper_smoke                         # smoke run, a minute
    python benchmarks/paper_table.py --config vgg8b-fashion --epochs 4 --n-train 500 \\
        --n-test 500 --threads 1                                     # reduced budget
    python benchmarks/paper_table.py --table-only                    # rebuild paper_table.md

Data is never downloaded. Fashion-MNIST: ``apt-get install dataset-fashion-mnist`` or
``SKNITRO_FASHION_MNIST=<dir>``; MNIST: its four IDX files in ``SKNITRO_MNIST=<dir>``;
CIFAR-10: the python version's ``cifar-10-batches-py`` directory in ``SKNITRO_CIFAR10=<dir>``
(``--data-dir`` overrides the variable). The grey CIFAR-10 of the ``mlp-cifar10-grey`` option is the
ITU-R BT.601 luma in integer arithmetic, ``(299 R + 587 G + 114 B + 500) // 1000``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import (PUBLISHED_SCHEDULE, backprop_mlp_flops, call_with_threads, fit_quietly, fmt,
                     line_plot, load_average, local_loss_epoch_flops, local_loss_mlp_flops,
                     machine_info, machine_line, md_table, measure_gemm, measure_memory,
                     memory_ratios, memory_table, mib, print_memory_result, pyplot,
                     roofline_summary, save_figure, target_cell, time_to_target, training_peaks,
                     write_json, write_text)
from float_les import FloatLESClassifier
from sklearn.neural_network import MLPClassifier

from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.cnn import PRESETS
from sknitro.datasets import DEFAULT_FASHION_MNIST_DIR, fashion_mnist_available, load_idx_dataset
from sknitro.nn.augment import random_crop_flip
from sknitro.nn.blocks import ConvBlock, LinearBlock
from sknitro.nn.network import IntegerNetwork, build_cnn, build_mlp

BATCH_SIZE = 64
LR_INV = 512
LR_AMP = 640
TARGET_VALUE = 32
VGG_HEAD_DIM = 4096
CROP_PADDING = 2  # NitroCNNClassifier's default; the row's augmentation pads by this many pixels
N_CLASSES = 10
MAX_GEMM_ROWS = 8192  # roofline GEMMs of conv layers use this many im2col rows at most


# -- the published configurations -------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """Where a data set comes from and what its images look like."""

    title: str
    env: str  # the environment variable naming its directory
    default_dir: str | None
    image_shape: tuple[int, int, int]  # (C, H, W) as the network sees it
    n_train_full: int
    how_to_get: str


CIFAR_FILES_TEXT = ("the files data_batch_1 ... data_batch_5 and test_batch of CIFAR-10's python "
                    "version (the folder cifar-10-batches-py of cifar-10-python.tar.gz)")
DATASETS = {
    "mnist": Dataset("MNIST", "SKNITRO_MNIST", None, (1, 28, 28), 60000,
                     "the four MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                     "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (plain or .gz)"),
    "fashion-mnist": Dataset("Fashion-MNIST", "SKNITRO_FASHION_MNIST", DEFAULT_FASHION_MNIST_DIR,
                             (1, 28, 28), 60000,
                             "the four Fashion-MNIST IDX files (Debian/Ubuntu: apt-get install "
                             "dataset-fashion-mnist)"),
    "cifar10": Dataset("CIFAR-10", "SKNITRO_CIFAR10", None, (3, 32, 32), 50000,
                       CIFAR_FILES_TEXT),
    "cifar10-grey": Dataset("CIFAR-10 (grey)", "SKNITRO_CIFAR10", None, (1, 32, 32), 50000,
                            CIFAR_FILES_TEXT),
}


@dataclass(frozen=True)
class PaperConfig:
    """One row of the paper's table: model, data, the row's hyperparameters, published results
    (percent; None where the paper gives none)."""

    name: str
    dataset: str
    model: str  # "mlp", or a NitroCNNClassifier preset
    hidden: tuple[int, ...]
    fwd_decay_inv: int
    head_decay_inv: int
    dropout: float = 0.0  # after each dense block
    augment: bool = False
    published_nitro: tuple[float, float] | None = None  # mean, std over 10 seeds
    published_pocketnn: float | None = None
    published_les: float | None = None
    published_bp: float | None = None

    @property
    def data(self) -> Dataset:
        return DATASETS[self.dataset]

    @property
    def title(self) -> str:
        if self.model == "mlp":
            n_features = math.prod(self.data.image_shape)
            widths = "-".join(str(w) for w in (n_features, *self.hidden, N_CLASSES))
            return f"MLP {widths} on {self.data.title}"
        return f"{self.model.upper()} (+ dense {list(self.hidden)}) on {self.data.title}"


CONFIGS = {c.name: c for c in (
    PaperConfig("mlp-mnist", "mnist", "mlp", (100, 50), 12000, 3000,
                published_nitro=(97.36, 0.23), published_pocketnn=96.98, published_bp=98.00),
    PaperConfig("mlp-fashion", "fashion-mnist", "mlp", (200, 100, 50), 10000, 8000,
                published_nitro=(88.66, 0.46), published_pocketnn=87.70, published_bp=89.79),
    # the published notebooks of the two MLP-1024 rows give one run, no spread
    PaperConfig("mlp1024-mnist", "mnist", "mlp", (1024, 1024, 1024), 28000, 500, augment=True,
                published_nitro=(98.28, None)),
    PaperConfig("mlp1024-fashion", "fashion-mnist", "mlp", (1024, 1024, 1024), 29000, 6000, augment=True,
                published_nitro=(89.13, None)),
    # the published notebook trains on RGB (3072 inputs); the grey variant is an option
    PaperConfig("mlp-cifar10", "cifar10", "mlp", (3000, 3000, 3000), 19000, 7500,
                dropout=0.1, augment=True, published_nitro=(61.03, 0.60), published_les=67.70,
                published_bp=66.40),
    PaperConfig("mlp-cifar10-grey", "cifar10-grey", "mlp", (3000, 3000, 3000), 19000, 7500,
                dropout=0.1, augment=True),
    PaperConfig("vgg8b-mnist", "mnist", "vgg8b", (1024,), 30000, 3000, augment=True,
                published_nitro=(99.45, 0.05), published_les=99.60, published_bp=99.74),
    PaperConfig("vgg8b-fashion", "fashion-mnist", "vgg8b", (1024,), 28000, 3500, dropout=0.1,
                augment=True, published_nitro=(93.66, 0.40), published_les=94.34,
                published_bp=95.47),
    PaperConfig("vgg8b-cifar10", "cifar10", "vgg8b", (1024,), 25000, 3000, dropout=0.15,
                augment=True, published_nitro=(87.96, 0.39), published_les=91.60,
                published_bp=94.01),
    PaperConfig("vgg11b-cifar10", "cifar10", "vgg11b", (1024,), 28000, 4500, augment=True,
                published_nitro=(87.39, 0.64), published_les=91.61, published_bp=94.44),
)}


# -- data ---------------------------------------------------------------------------------------
class DatasetMissing(Exception):
    """The data of a configuration is not on this machine; the message says how to get it."""


CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"


def data_directory(dataset: str, data_dir: Path | None) -> Path:
    """The directory holding ``dataset``: ``data_dir``, its environment variable, or its default;
    raise :class:`DatasetMissing` when the files are not there."""
    info = DATASETS[dataset]
    directory = data_dir or os.environ.get(info.env) or info.default_dir
    if directory is not None:
        directory = Path(directory).expanduser()
        if dataset.startswith("cifar10"):
            present = all((directory / name).is_file() for name in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE))
        else:
            present = fashion_mnist_available(directory)  # MNIST's IDX file names are the same
        if present:
            return directory
    where = f"looked in {directory}" if directory is not None else f"{info.env} is not set"
    raise DatasetMissing(
        f"{info.title} is not on this machine ({where}). Put {info.how_to_get} in a directory and "
        f"set {info.env}=<dir> or pass --data-dir <dir>. Nothing is downloaded.")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (a pickle of trusted data): uint8 images (n, 3, 32, 32), labels."""
    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"], dtype=np.uint8)


def luma(images: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 RGB images (n, 3, H, W), in integer arithmetic: (n, 1, H, W)."""
    r, g, b = (images[:, c].astype(np.int32) for c in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)[:, None]


def load_images(dataset: str, data_dir: Path | None) -> tuple[np.ndarray, ...]:
    """uint8 images ``(n, C, H, W)`` and labels of the training and test sets."""
    directory = data_directory(dataset, data_dir)
    if not dataset.startswith("cifar10"):
        X_train, y_train, X_test, y_test = load_idx_dataset(directory)
        return X_train[:, None], y_train, X_test[:, None], y_test
    train = [read_cifar_batch(directory / name) for name in CIFAR_TRAIN_FILES]
    X_test, y_test = read_cifar_batch(directory / CIFAR_TEST_FILE)
    X_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    if dataset == "cifar10-grey":
        X_train, X_test = luma(X_train), luma(X_test)
    return X_train, y_train, X_test, y_test


def load_data(config: PaperConfig, data_dir: Path | None, n_train: int | None,
              n_test: int | None) -> tuple[np.ndarray, ...]:
    """The configuration's data set, cut to the first ``n_train`` / ``n_test`` samples."""
    X_train, y_train, X_test, y_test = load_images(config.dataset, data_dir)
    for flag, n, available in (("--n-train", n_train, len(y_train)), ("--n-test", n_test, len(y_test))):
        if n is not None and n > available:
            raise ValueError(f"{flag} {n}, but {config.data.title} has {available} samples")
    return X_train[:n_train], y_train[:n_train], X_test[:n_test], y_test[:n_test]


# -- the methods -----------------------------------------------------------------------------------
class EpochLog:
    """Seconds of every epoch (as the method times its training) and the test accuracy of the
    model after it. The test set is scored for the report only: no decision reads it.

    A sknitro estimator calls it as a training callback; the float peers call :meth:`record`.
    """

    def __init__(self, X_test: np.ndarray, y_test: np.ndarray, label: str) -> None:
        self.X_test, self.y_test, self.label = X_test, y_test, label
        self.seconds: list[float] = []
        self.test_accuracy: list[float] = []

    def record(self, model: Any, seconds: float) -> float:
        accuracy = float(model.score(self.X_test, self.y_test))
        self.seconds.append(seconds)
        self.test_accuracy.append(accuracy)
        print(f"    {self.label} epoch {len(self.seconds):3d}: {seconds:7.2f} s, test {accuracy:.4f}",
              flush=True)
        return accuracy

    def __call__(self, model: Any, record: dict) -> None:
        """The sknitro callback: the epoch's training seconds, its test accuracy into ``history_``."""
        record["test_accuracy"] = self.record(model, record["seconds"])


def attach_log(model: Any, log: EpochLog) -> None:
    """Log every epoch of ``model``: a sknitro estimator through its ``callbacks``, a float peer
    through its ``epoch_log``."""
    if isinstance(model, (NitroMLPClassifier, NitroCNNClassifier)):
        model.set_params(callbacks=log)
    else:
        model.epoch_log = log


class AugmentedNitroMLP(NitroMLPClassifier):
    """NitroMLPClassifier plus the CNN's per-sample crop-and-flip augmentation of flattened
    images of shape ``augment_shape`` (C, H, W): the published MLP-1024 and CIFAR-10 MLP rows
    train with it. The MLP has no public augmentation, hence the override of its hook."""

    augment_shape: tuple[int, int, int] | None = None

    def _augmenter(self) -> Callable[[Any, np.random.Generator], Any] | None:
        if self.augment_shape is None:
            return None
        shape = self.augment_shape
        crop_flip = functools.partial(random_crop_flip, padding=CROP_PADDING,
                                      black=self.encoder_.black_level(shape))

        def augment(batch: Any, rng: np.random.Generator) -> Any:
            return crop_flip(batch.reshape(len(batch), *shape), rng).reshape(len(batch), -1)

        return augment


class LoggedMLPClassifier(MLPClassifier):
    """scikit-learn's MLPClassifier with an epoch log. An epoch's seconds run from the end of
    the previous epoch's bookkeeping to the start of this one's (validation scoring excluded,
    as for sknitro); the first also holds input checks and initialisation (a warm-up)."""

    epoch_log: EpochLog | None = None

    def fit(self, X: Any, y: Any) -> LoggedMLPClassifier:
        self._epoch_started = time.perf_counter()
        return super().fit(X, y)

    def _update_no_improvement_count(self, *args: Any, **kwargs: Any) -> None:
        seconds = time.perf_counter() - self._epoch_started
        super()._update_no_improvement_count(*args, **kwargs)
        if self.epoch_log is not None:
            self.epoch_log.record(self, seconds)
        self._epoch_started = time.perf_counter()


def integer_params(config: PaperConfig) -> dict[str, Any]:
    """The row's published hyperparameters of the sknitro estimator (no schedule, no seed)."""
    return dict(hidden_layer_sizes=config.hidden, lr_inv=LR_INV, lr_amp=LR_AMP, target_value=TARGET_VALUE,
                fwd_decay_inv=config.fwd_decay_inv, head_decay_inv=config.head_decay_inv,
                dropout=config.dropout, batch_size=BATCH_SIZE)


def integer_model(config: PaperConfig, seed: int, max_epochs: int, args: argparse.Namespace) -> Any:
    """The sknitro estimator with the row's published hyperparameters and schedule."""
    params = dict(**integer_params(config), max_iter=max_epochs, random_state=seed, **PUBLISHED_SCHEDULE)
    if config.model != "mlp":
        return NitroCNNClassifier(architecture=config.model, head_dim=VGG_HEAD_DIM,
                                  augment=config.augment, crop_padding=CROP_PADDING, **params)
    if not config.augment:
        return NitroMLPClassifier(**params)
    model = AugmentedNitroMLP(**params)
    model.augment_shape = config.data.image_shape
    return model


def les_model(config: PaperConfig, seed: int, max_epochs: int, args: argparse.Namespace) -> Any:
    """The float32 local-loss peer under the integer network's schedule."""
    schedule = {key: PUBLISHED_SCHEDULE[key] for key in
                ("validation_fraction", "n_iter_no_change", "lr_plateau_factor",
                 "lr_plateau_patience", "tol")}
    return FloatLESClassifier(config.hidden, loss=args.les_loss, batch_size=BATCH_SIZE,
                              max_iter=max_epochs, random_state=seed, **schedule)


def bp_model(config: PaperConfig, seed: int, max_epochs: int, args: argparse.Namespace) -> Any:
    """scikit-learn's backpropagation peer, stopping after as many epochs without a new best
    validation accuracy as the others (it stops once its count exceeds ``n_iter_no_change``)."""
    return LoggedMLPClassifier(
        hidden_layer_sizes=config.hidden, batch_size=BATCH_SIZE, solver="adam", early_stopping=True,
        validation_fraction=PUBLISHED_SCHEDULE["validation_fraction"],
        n_iter_no_change=PUBLISHED_SCHEDULE["n_iter_no_change"] - 1, tol=0.0,
        max_iter=max_epochs, random_state=seed)


def flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


def integer_input(X: np.ndarray, config: PaperConfig) -> np.ndarray:
    """uint8 pixels: flat for the MLP, (n, C, H, W) images for the CNNs."""
    return flat(X) if config.model == "mlp" else X


def integer_flops(config: PaperConfig, n_samples: int) -> int:
    layers, output_in = integer_layers(config)
    return local_loss_epoch_flops([rows * k * n for rows, k, n, _ in layers],
                                  [head for *_, head in layers], output_in, N_CLASSES, n_samples)


def mlp_flops(counter: Callable[[int, int, Sequence[int], int], int]) -> Callable[[PaperConfig, int], int]:
    """The epoch FLOPs of a float MLP of the row's sizes, by ``counter``."""
    return lambda config, n: counter(n, math.prod(config.data.image_shape), config.hidden, N_CLASSES)


@dataclass(frozen=True)
class Method:
    """A contender: its estimator, its input, the analytic FLOPs of one epoch."""

    name: str
    label: str
    make: Callable[[PaperConfig, int, int, argparse.Namespace], Any]  # config, seed, max epochs
    prepare: Callable[[np.ndarray, PaperConfig], np.ndarray]  # uint8 images -> the model's input
    flops: Callable[[PaperConfig, int], int]  # config, training samples -> FLOPs of an epoch
    mlp_only: bool


METHODS = {m.name: m for m in (
    Method("integer", "sknitro (integer NITRO-D)", integer_model, integer_input, integer_flops, False),
    Method("float-les", "float32 local loss (NumPy)", les_model,
           lambda X, config: flat(X).astype(np.float32) / np.float32(255),
           mlp_flops(local_loss_mlp_flops), True),
    Method("float-bp", "float backprop (scikit-learn adam)", bp_model,
           lambda X, config: flat(X).astype(np.float64) / 255.0, mlp_flops(backprop_mlp_flops), True),
)}


def integer_layers(config: PaperConfig) -> tuple[list[tuple[int, int, int, int]], int]:
    """The integer network's blocks as GEMMs, ``(rows per sample, K, N, head inputs)`` each (a
    conv block is an im2col GEMM with one row per output position), and the output layer's
    input size; read from a freshly built network."""
    shape = config.data.image_shape
    rng = np.random.default_rng(0)
    network: IntegerNetwork
    if config.model == "mlp":
        network = build_mlp(math.prod(shape), config.hidden, N_CLASSES, rng=rng)
    else:
        network = build_cnn(shape, PRESETS[config.model]["features"], config.hidden, N_CLASSES,
                            head_dim=VGG_HEAD_DIM, rng=rng)
    layers = []
    for stage in network.path:
        if isinstance(stage, ConvBlock):
            conv = stage.conv
            layers.append((shape[1] * shape[2], conv.in_channels * conv.kernel**2, conv.out_channels,
                           stage.head.linear.in_features))
        elif isinstance(stage, LinearBlock):
            layers.append((1, stage.linear.in_features, stage.linear.out_features,
                           stage.head.linear.in_features))
        shape = stage.output_shape(shape)
    return layers, network.output.linear.in_features


def roofline_shapes(config: PaperConfig) -> dict[str, tuple[int, int, int]]:
    """The forward and weight-gradient GEMMs of the integer network's costliest block."""
    rows, k, n, _ = max(integer_layers(config)[0], key=lambda layer: layer[0] * layer[1] * layer[2])
    m = min(BATCH_SIZE * rows, MAX_GEMM_ROWS)
    return {f"({m}x{k})@({k}x{n})": (m, k, n), f"({n}x{m})@({m}x{k})": (n, m, k)}


def methods_for(config: PaperConfig, names: Sequence[str]) -> list[Method]:
    """The chosen methods that apply to ``config`` (the float peers run on the MLP rows)."""
    return [METHODS[n] for n in names if config.model == "mlp" or not METHODS[n].mlp_only]


# -- running -----------------------------------------------------------------------------------------
def fit_run(method: Method, config: PaperConfig, data: tuple[np.ndarray, ...], seed: int,
            args: argparse.Namespace) -> dict:
    """Fit one method with one seed; its epochs, accuracies and final test accuracy."""
    X_train, y_train, X_test, y_test = data
    model = method.make(config, seed, args.epochs, args)
    log = EpochLog(X_test, y_test, f"{method.name} seed {seed}")
    attach_log(model, log)
    print(f"  [{method.name}] seed {seed}: fit, at most {args.epochs} epochs", flush=True)
    started = time.perf_counter()
    hit_max = fit_quietly(model, X_train, y_train)
    wall = time.perf_counter() - started
    final = float(model.score(X_test, y_test))
    validation = [float(v) for v in model.validation_scores_]
    print(f"  [{method.name}] seed {seed}: final test {final:.4f}, {model.n_iter_} epochs, "
          f"{sum(log.seconds):.1f} s training, best validation {max(validation):.4f}", flush=True)
    return {"seed": seed, "final_test_accuracy": final, "epochs_run": model.n_iter_,
            "kept_epoch": int(np.argmax(validation)) + 1, "best_validation": max(validation),
            "n_train_fit": model.t_ // model.n_iter_, "epoch_seconds": log.seconds,
            "test_accuracy": log.test_accuracy, "validation_accuracy": validation,
            "train_seconds": sum(log.seconds), "fit_wall_seconds": wall, "hit_max_epochs": hit_max}


def summarise(method: Method, config: PaperConfig, runs: list[dict], gemm_runs: list[dict],
              target: float) -> dict:
    """Median epoch time after warm-up, throughput, roofline, accuracy over seeds."""
    after_warmup = [s for run in runs for s in run["epoch_seconds"][1:]]
    median = statistics.median(after_warmup or [s for run in runs for s in run["epoch_seconds"]])
    n_fit = runs[0]["n_train_fit"]
    accuracy = [run["final_test_accuracy"] for run in runs]
    full_fit = config.data.n_train_full - math.ceil(PUBLISHED_SCHEDULE["validation_fraction"]
                                                    * config.data.n_train_full)
    return {
        "median_epoch_seconds": median, "timed_epochs": len(after_warmup) or len(runs),
        "warmup_excluded": bool(after_warmup), "n_train_fit": n_fit,
        "samples_per_second": n_fit / median, "full_epoch_seconds_estimate": median * full_fit / n_fit,
        "roofline": roofline_summary(gemm_runs, method.flops(config, n_fit), median),
        "mean_test_accuracy": float(np.mean(accuracy)), "std_test_accuracy": float(np.std(accuracy)),
        "time_to_target": [time_to_target(r["epoch_seconds"], r["test_accuracy"], target) for r in runs],
    }


def acceptance(summary: dict, subset: bool, max_gap_points: float = 1.2) -> dict | None:
    """The issue's criterion: integer test accuracy within ``max_gap_points`` of float BP."""
    if "integer" not in summary or "float-bp" not in summary:
        return None
    gap = 100 * (summary["float-bp"]["mean_test_accuracy"] - summary["integer"]["mean_test_accuracy"])
    return {"gap_points": gap, "max_gap_points": max_gap_points, "met": gap <= max_gap_points,
            "on_subset": subset}


def memory_child_arguments(method: str, config: PaperConfig, args: argparse.Namespace) -> list[str]:
    arguments = ["--memory-child", method, "--config", config.name,
                 "--memory-epochs", str(args.memory_epochs), "--les-loss", args.les_loss]
    n_train = args.memory_n_train or args.n_train
    for flag, value in (("--n-train", n_train), ("--threads", args.threads),
                        ("--data-dir", args.data_dir)):
        if value is not None:
            arguments += [flag, str(value)]
    return arguments


def memory_child(args: argparse.Namespace) -> dict:
    """In the child: load the data, fit ``--memory-epochs`` epochs, report the peaks."""
    config, method = CONFIGS[args.config[0]], METHODS[args.memory_child]
    X_train, y_train, _, _ = load_data(config, args.data_dir, args.n_train, n_test=1)
    X = method.prepare(X_train, config)
    del X_train
    model = method.make(config, 0, args.memory_epochs, args)

    def train() -> list[float]:
        started = time.perf_counter()
        fit_quietly(model, X, y_train)
        return [time.perf_counter() - started]

    return {"method": method.name, "epochs": args.memory_epochs, "n_train": len(y_train),
            **training_peaks(train)}


def run_config(config: PaperConfig, args: argparse.Namespace) -> dict:
    """Everything for one configuration; writes its JSON, Markdown and plots."""
    data_directory(config.dataset, args.data_dir)  # fail before any work when the data is missing
    methods = methods_for(config, args.methods)
    print(f"== {config.name}: {config.title}; {', '.join(m.name for m in methods)}", flush=True)
    results: dict[str, Any] = {"config": asdict(config), "title": config.title,
                               "options": {k: v for k, v in vars(args).items() if k != "memory_child"},
                               "machine": machine_info(), "labels": {m.name: m.label for m in methods}}
    if not args.skip_memory:  # first: the children must not inherit a big parent's ru_maxrss
        print("[memory] peak memory of training, one child process per method", flush=True)
        results["memory"] = measure_memory(
            __file__, [m.name for m in methods], args.memory_epochs,
            lambda name: memory_child_arguments(name, config, args))
    data = load_data(config, args.data_dir, args.n_train, args.n_test)
    results["n_train"], results["n_test"] = len(data[1]), len(data[3])
    shapes = roofline_shapes(config)
    print("[roofline] float64 GEMM throughput, before the runs", flush=True)
    gemm_runs = [measure_gemm(shapes, "before")]
    inputs = {m.name: (m.prepare(data[0], config), data[1], m.prepare(data[2], config), data[3])
              for m in methods}
    runs: dict[str, list[dict]] = {m.name: [] for m in methods}
    for seed in range(args.seeds):  # seed by seed, the methods interleaved
        for m in methods:
            runs[m.name].append(fit_run(m, config, inputs[m.name], seed, args))
    print("[roofline] float64 GEMM throughput, after the runs", flush=True)
    gemm_runs.append(measure_gemm(shapes, "after"))
    results["float32_gemm_gflops"] = measure_gemm(dict(list(shapes.items())[:1]), "after", np.float32)
    results["runs"] = runs
    results["summary"] = {m.name: summarise(m, config, runs[m.name], gemm_runs, args.target)
                          for m in methods}
    results["acceptance"] = acceptance(results["summary"], args.n_train is not None)
    results["machine"]["load_average_end"] = load_average()
    write_json(args.out / f"paper_{config.name}.json", results)
    write_text(args.out / f"paper_{config.name}.md", config_markdown(results))
    write_plots(results, args.out)
    return results


# -- reporting ------------------------------------------------------------------------------------------
def published_cell(config: dict, method: str) -> str:
    """The paper's figure for ``method`` on a row (percent)."""
    if method == "integer":
        nitro = config["published_nitro"]
        if nitro is None:
            return "–"
        return f"{nitro[0]:.2f}" + ("" if nitro[1] is None else f" ± {nitro[1]:.2f}")
    value = config["published_les" if method == "float-les" else "published_bp"]
    return "–" if value is None else f"{value:.2f}"


def accuracy_cell(summary: dict, n_seeds: int) -> str:
    return f"{100 * summary['mean_test_accuracy']:.2f} ± {100 * summary['std_test_accuracy']:.2f}" \
        if n_seeds > 1 else f"{100 * summary['mean_test_accuracy']:.2f}"


def memory_cell(memory: dict | None) -> str:
    if memory is None:
        return "n/a"
    return f"{mib(memory['whole_process_peak_rss_kib'])} / {mib(memory['training_peak_rss_kib'])}"


def config_markdown(results: dict) -> str:
    config, options, summary = results["config"], results["options"], results["summary"]
    labels, runs, seeds = results["labels"], results["runs"], options["seeds"]
    memory = results.get("memory", {})
    lines = [f"# Paper table: `{config['name']}`, {results['title']}", "",
             machine_line(results["machine"]), "",
             f"{results['n_train']} training samples ({PUBLISHED_SCHEDULE['validation_fraction']:.0%} "
             f"of them held out for validation) / {results['n_test']} test; batch {BATCH_SIZE}; at most "
             f"{options['epochs']} epochs; seeds 0..{seeds - 1}; BLAS threads "
             f"{options['threads'] or 'as the libraries choose'}. Integer: lr_inv {LR_INV}, lr_amp "
             f"{LR_AMP}, fwd_decay_inv {config['fwd_decay_inv']}, head_decay_inv "
             f"{config['head_decay_inv']}, dropout {config['dropout']}, augmentation "
             f"{config['augment']}. Early stopping after {PUBLISHED_SCHEDULE['n_iter_no_change']} "
             f"epochs without a new best validation accuracy, the best validated model kept; "
             f"integer and float LES: lr /{PUBLISHED_SCHEDULE['lr_plateau_factor']} after "
             f"{PUBLISHED_SCHEDULE['lr_plateau_patience']} epochs without a gain of "
             f"{PUBLISHED_SCHEDULE['tol']:.0%}. Float LES loss: {options['les_loss']}.", "",
             f"## Results (test accuracy of the final model, %, mean ± std over {seeds} seed(s))", ""]
    headers = ["method", "test accuracy", "paper", "epochs run", "s / epoch", "samples / s",
               "GFLOP / epoch", "GFLOP/s", "of float64 roofline", "peak RSS, MiB (process / training)",
               f"time to {options['target']:.0%} (test)"]
    rows = []
    for name, s in summary.items():
        roof = s["roofline"]
        rows.append([labels[name], accuracy_cell(s, seeds), published_cell(config, name),
                     ", ".join(str(r["epochs_run"]) for r in runs[name]),
                     f"{s['median_epoch_seconds']:.3f}", f"{s['samples_per_second']:.0f}",
                     f"{roof['epoch_flops'] / 1e9:.2f}", f"{roof['achieved_gflops']:.2f}",
                     f"{100 * roof['fraction_of_roofline']:.1f} %",
                     memory_cell(memory.get(name)),
                     "; ".join(target_cell(hit) for hit in s["time_to_target"])])
    lines += [md_table(headers, rows), ""]
    first = next(iter(summary.values()))
    lines += [f"s / epoch: median over {'epochs 2.. of every seed (epoch 1 is a warm-up)' if first['warmup_excluded'] else 'the only epoch (no warm-up excluded)'}"
              f", training only (validation and test scoring excluded); {first['n_train_fit']} "
              "training samples per epoch. A full-data epoch would take about "
              + ", ".join(f"{s['full_epoch_seconds_estimate']:.0f} s ({name})" for name, s in summary.items())
              + ". FLOPs are analytic (2 per multiply-add of the GEMMs each method runs).", ""]
    if results["acceptance"] is not None:
        acc = results["acceptance"]
        lines += [f"**Acceptance (integer within {acc['max_gap_points']} points of float BP): "
                  f"{'met' if acc['met'] else 'not met'}** — gap {acc['gap_points']:.2f} points"
                  f"{' (on a subset: indicative only)' if acc['on_subset'] else ''}.", ""]
    lines += ["## Per seed", ""]
    rows = [[labels[name], r["seed"], f"{100 * r['final_test_accuracy']:.2f}",
             f"{100 * r['best_validation']:.2f}", r["epochs_run"], r["kept_epoch"],
             f"{r['train_seconds']:.1f}", "yes" if r["hit_max_epochs"] else "no"]
            for name in summary for r in runs[name]]
    lines += [md_table(["method", "seed", "test %", "best validation %", "epochs run", "kept epoch",
                        "training s", "hit max epochs"], rows), ""]
    roof = first["roofline"]
    lines += ["## Roofline (NumPy GEMM of the integer network's costliest layer; best of before/after)", ""]
    rows = [[f"float64 GEMM {shape}", f"{g:.1f} GFLOP/s"] for shape, g in roof["gemm_gflops"].items()]
    rows += [[f"float32 GEMM {shape}", f"{g:.1f} GFLOP/s"]
             for shape, g in results["float32_gemm_gflops"].items()]
    lines += [md_table(["", "value"], rows), "",
              "The fraction is against the float64 roofline for every method; the float32 LES "
              "runs on float32 GEMMs, whose peak is the float32 line.", ""]
    if memory:
        names = list(memory)
        ratios = {f"{n} / float-bp": memory_ratios(memory[n], memory["float-bp"])
                  for n in names if n != "float-bp" and "float-bp" in memory}
        n_mem = memory[names[0]]["n_train"]
        lines += [f"## Peak memory (a child process per method: load {n_mem} samples, fit "
                  f"{options['memory_epochs']} epoch(s))", "",
                  memory_table(memory, names, labels, ratios), ""]
    return "\n".join(lines)


def write_plots(results: dict, out: Path) -> list[Path]:
    """Test accuracy per epoch (every seed), seconds per epoch (seed 0), peak memory."""
    name, title = results["config"]["name"], results["title"]
    labels, runs = results["labels"], results["runs"]
    colors = {method: f"C{i}" for i, method in enumerate(labels)}

    def series(key: str, seeds: int) -> list[dict]:
        return [{"y": run[key], "color": colors[m], "linewidth": 1.2, "alpha": 0.85,
                 "label": labels[m] if i == 0 else None}
                for m in labels for i, run in enumerate(runs[m][:seeds])]

    nitro = results["config"]["published_nitro"]
    paths = [line_plot(out / f"paper_{name}_accuracy.png", series("test_accuracy", len(runs)),
                       "epoch", "test accuracy (every seed)", title,
                       hline=(nitro[0] / 100, "NITRO-D, paper") if nitro else None),
             line_plot(out / f"paper_{name}_epoch_time.png", series("epoch_seconds", 1), "epoch",
                       "training seconds per epoch (seed 0)", title)]
    plt = pyplot()
    if results.get("memory") and plt is not None:
        memory = results["memory"]
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        x = np.arange(len(memory))
        for offset, (key, label) in zip((-0.2, 0.2), (("whole_process_peak_rss_kib", "whole process"),
                                                      ("training_peak_rss_kib", "during training"))):
            ax.bar(x + offset, [(memory[m][key] or 0) / 1024 for m in memory], width=0.4, label=label)
        ax.set_xticks(x, [labels[m] for m in memory], fontsize=8)
        ax.set_ylabel("peak RSS, MiB")
        ax.set_title(f"{title}\npeak memory of training ({memory[next(iter(memory))]['n_train']} samples)")
        ax.legend()
        paths.append(save_figure(fig, out / f"paper_{name}_memory.png"))
    return [path for path in paths if path is not None]


def combined_table(out: Path) -> str:
    """Every ``paper_*.json`` of ``out`` in one Markdown table."""
    rows = []
    for path in sorted(out.glob("paper_*.json")):
        results = json.loads(path.read_text())
        config, summary, options = results["config"], results["summary"], results["options"]
        seeds = options["seeds"]

        def ours(method: str) -> str:
            return accuracy_cell(summary[method], seeds) if method in summary else "–"

        integer = summary.get("integer")
        acc = results.get("acceptance")
        rows.append([f"`{config['name']}`", results["title"],
                     f"{results['n_train']} / {results['n_test']}", options["epochs"], seeds,
                     ours("integer"), published_cell(config, "integer"),
                     ours("float-les"), published_cell(config, "float-les"),
                     ours("float-bp"), published_cell(config, "float-bp"),
                     fmt(integer and integer["median_epoch_seconds"], ".2f"),
                     fmt(integer and integer["full_epoch_seconds_estimate"], ".0f"),
                     "–" if acc is None else f"{acc['gap_points']:.2f} ({'met' if acc['met'] else 'not met'})"])
    headers = ["config", "model and data", "train / test samples", "max epochs", "seeds",
               "integer (ours) %", "NITRO-D (paper)", "float LES (ours)", "float LES (paper)",
               "float BP (ours)", "float BP (paper)", "integer s / epoch", "integer s / full epoch (est.)",
               "BP − integer, points (≤ 1.2?)"]
    return ("# NITRO-D paper table, measured here\n\n"
            "Final-model test accuracy (%, mean ± std over seeds; the paper reports the best test "
            "epoch over 10 seeds). Generated by `benchmarks/paper_table.py` from the "
            "`paper_*.json` files next to this one; each row's details are in `paper_<config>.md`.\n\n"
            + md_table(headers, rows) + "\n")


# -- command line -----------------------------------------------------------------------------------------
def list_configs(data_dir: Path | None) -> None:
    for config in CONFIGS.values():
        try:
            where = f"data in {data_directory(config.dataset, data_dir)}"
        except DatasetMissing:
            where = f"data missing (set {config.data.env})"
        print(f"{config.name:17s} {config.title}; fwd/head decay_inv {config.fwd_decay_inv}/"
              f"{config.head_decay_inv}, dropout {config.dropout}, augment {config.augment}; {where}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", choices=[*CONFIGS, "all"],
                        help="configuration(s) to run; 'all' runs those whose data is here")
    parser.add_argument("--epochs", type=int, default=150, help="maximum of epochs (default 150, as published)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    parser.add_argument("--n-train", type=int, help="first N training samples (reduced budget, smoke runs)")
    parser.add_argument("--n-test", type=int, help="first N test samples")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="methods to run (default all; the float peers run on the MLP rows only)")
    parser.add_argument("--les-loss", choices=("squared_error", "cross_entropy"), default="squared_error",
                        help="local loss of the float LES peer (default squared_error, as the integer scheme)")
    parser.add_argument("--data-dir", type=Path,
                        help="directory of the configuration's data set (overrides its environment variable)")
    parser.add_argument("--target", type=float, default=0.88, help="target test accuracy (default 0.88)")
    parser.add_argument("--memory-epochs", type=int, default=1, help="epochs fitted by each memory child (default 1)")
    parser.add_argument("--memory-n-train", type=int, help="training samples of the memory children (default: --n-train)")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--threads", type=int,
                        help="limit BLAS/OpenMP threads (threadpoolctl), e.g. 1 on a shared machine")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="output directory (default benchmarks/results)")
    parser.add_argument("--list", action="store_true", help="list the configurations and whether their data is here")
    parser.add_argument("--table-only", action="store_true", help="only rebuild <out>/paper_table.md")
    parser.add_argument("--memory-child", choices=list(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.config or args.list or args.table_only):
        parser.error("give --config NAME (or --list, or --table-only)")
    for name in ("epochs", "seeds", "n_train", "n_test", "memory_epochs", "memory_n_train", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace) -> int:
    if args.memory_child:
        print_memory_result(memory_child(args))
        return 0
    if args.list:
        list_configs(args.data_dir)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    if not args.table_only:
        names = list(CONFIGS) if "all" in args.config else args.config
        for name in names:
            try:
                run_config(CONFIGS[name], args)
            except DatasetMissing as missing:
                print(f"{name}: {missing}", file=sys.stderr, flush=True)
                status = 2
    write_text(args.out / "paper_table.md", combined_table(args.out))
    return status


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sys.exit(call_with_threads(args.threads, lambda: run(args)))


if __name__ == "__main__":
    main()
