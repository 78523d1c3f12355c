"""Benchmark: sknitro's NitroMLPClassifier vs scikit-learn's MLPClassifier on Fashion-MNIST.

The network is the published NITRO-D MLP 784-200-100-50-10 with batch size 64 and the
published hyperparameters, ``paper_table.py``'s row ``mlp-fashion`` (this script takes them
from there, with the data loading, the roofline shapes and the FLOP count). sknitro gets the
raw uint8 images flattened to ``(n, 784)``; the float peer, ``MLPClassifier(solver="adam")``
with the same ``hidden_layer_sizes`` and ``batch_size``, gets them scaled to [0, 1] as float64.
Both models run in the same process, epoch by epoch and interleaved (one epoch of sknitro, one
of the peer, ...), so that a change of load on a shared machine hits both alike. The protocol
is ``docs/benchmarks.md`` of the project.

Run from the repository root::

    python benchmarks/bench_mlp_fashion.py                      # per-epoch mode, 5 epochs
    python benchmarks/bench_mlp_fashion.py --epochs 40          # long enough to reach 88%
    python benchmarks/bench_mlp_fashion.py --epochs 30 --lr-inv 256   # sknitro's default lr_inv
    python benchmarks/bench_mlp_fashion.py --full --seeds 10    # published schedule, no peer
    python benchmarks/bench_mlp_fashion.py --epochs 3 --n-train 10000 --n-test 2000 \\
        --out /tmp/bench_smoke                                  # smoke run

Per-epoch mode (the default) measures

1. epoch time: each model is trained with ``partial_fit``, one epoch per call (which keeps
   the optimizer state: Adam moments for the peer, the RNG for sknitro), timed with
   ``time.perf_counter``; the figure is the median over epochs 2..k (epoch 1 is a warm-up)
   and the ratio sknitro / peer;
2. the roofline: float64 GEMM throughput of NumPy on the layer shapes (64x784)@(784x200)
   and (200x64)@(64x784), best of several repetitions, against the analytic FLOPs of one
   sknitro epoch (forward and weight gradient of every block, forward, input gradient and
   weight gradient of every learning head, forward and weight gradient of the output layer);
3. peak memory of training each model, each in a child process of its own (this script
   run with the hidden ``--memory-child`` flag), which loads the data and trains
   ``--memory-epochs`` epochs: the peak resident set (``VmHWM``, whole process, and
   during training alone), ``getrusage(RUSAGE_SELF).ru_maxrss`` and the ``tracemalloc``
   peak of the training calls. Each model gets its input as in the per-epoch mode: the
   peer's float64 copy is made before training (it shows in "RSS before training"), while
   sknitro's int8 encoding runs inside ``partial_fit`` (it shows in the training peaks).
   Linux carries ``ru_maxrss`` across ``exec``, so a child can inherit its parent's peak:
   the children run before the parent loads any data, and ``VmHWM`` (the peak of the
   child's own address space) is the primary figure;
4. test accuracy after each epoch (not timed), cumulative training seconds, and the time
   at which each model first reaches ``--target`` test accuracy (None if never).

``--full`` instead fits NitroMLPClassifier once per seed with the published schedule
(early stopping on a 10% validation split carved from the training set, ``lr_inv``
plateau schedule, at most ``--max-epochs`` epochs) and reports the final model's test
accuracy (mean +- std over seeds), epochs run, total time and ``validation_scores_``. The test
set decides nothing: it is scored once, on the model early stopping kept.

Results: ``<out>/mlp_fashion.json`` (every raw number and the machine) and
``<out>/mlp_fashion.md`` (tables), plus ``mlp_fashion_accuracy.png`` and
``mlp_fashion_epoch_time.png`` when matplotlib is importable. ``--full`` writes
``mlp_fashion_full.json`` / ``.md`` instead. On a busy shared machine, ``--threads 1`` keeps
BLAS threads from spinning against other jobs (it applies to both models and the roofline).
Needs Fashion-MNIST on disk (``apt-get install dataset-fashion-mnist``, or
``SKNITRO_FASHION_MNIST=<dir>``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import (PUBLISHED_SCHEDULE, call_with_threads, cumulative, fit_quietly, fmt, line_plot,
                     load_average, machine_info, machine_line, md_table, measure_gemm,
                     measure_memory as measure_children, memory_ratios, memory_table,
                     print_memory_result, ratio, roofline_summary, target_cell,
                     time_to_target, training_peaks, write_json, write_text)
from paper_table import CONFIGS, N_CLASSES, integer_flops, integer_params, roofline_shapes
from paper_table import load_data as load_config_data
from sklearn.neural_network import MLPClassifier

from sknitro import NitroMLPClassifier

# The published NITRO-D MLP on Fashion-MNIST: paper_table.py's row "mlp-fashion".
CONFIG = CONFIGS["mlp-fashion"]
NITRO_PARAMS = integer_params(CONFIG)  # its published hyperparameters
HIDDEN = CONFIG.hidden
BATCH_SIZE = NITRO_PARAMS["batch_size"]
CLASSES = np.arange(N_CLASSES)
# The published schedule (--full): early stopping and lr_inv plateaus on a validation split.
FULL_SCHEDULE = PUBLISHED_SCHEDULE

# Float64 GEMMs of the first (largest) layer: forward, and the weight gradient.
GEMM_SHAPES = roofline_shapes(CONFIG)


# -- the two contenders -----------------------------------------------------------------
@dataclass(frozen=True)
class Contender:
    """A model of the comparison: how to build it and what input it gets."""

    name: str
    label: str
    make: Callable[[int], Any]  # seed -> unfitted estimator with partial_fit
    prepare: Callable[[np.ndarray], np.ndarray]  # uint8 (n, 784) -> the model's input


def make_nitro(seed: int, **extra: Any) -> NitroMLPClassifier:
    return NitroMLPClassifier(**{**NITRO_PARAMS, **extra}, random_state=seed)


def make_peer(seed: int) -> MLPClassifier:
    return MLPClassifier(hidden_layer_sizes=HIDDEN, batch_size=BATCH_SIZE, solver="adam",
                         random_state=seed)


def raw_pixels(X: np.ndarray) -> np.ndarray:
    return X


def unit_float(X: np.ndarray) -> np.ndarray:
    return X.astype(np.float64) / 255.0


CONTENDERS = {
    "sknitro": Contender("sknitro", "sknitro NitroMLPClassifier", make_nitro, raw_pixels),
    "sklearn": Contender("sklearn", "scikit-learn MLPClassifier (adam)", make_peer, unit_float),
}


def use_params(lr_inv: int, target_value: int) -> str:
    """Give sknitro's contender an initial ``lr_inv`` and a ``target_value``; returns the
    suffix of the results' file names.

    The published values (512, 32) write ``mlp_fashion.*``; others (sknitro's defaults are
    256 and 64) write ``mlp_fashion_lr<N>.*`` / ``mlp_fashion_lr<N>_tv<T>.*`` and say so in the
    contender's label.
    """
    changed = {name: value for name, value in (("lr_inv", lr_inv), ("target_value", target_value))
               if value != NITRO_PARAMS[name]}
    if not changed:
        return ""
    CONTENDERS["sknitro"] = Contender(
        "sknitro", "sknitro NitroMLPClassifier (" + ", ".join(f"{k} {v}" for k, v in changed.items()) + ")",
        functools.partial(make_nitro, **changed), raw_pixels)
    return f"_lr{lr_inv}" + (f"_tv{target_value}" if "target_value" in changed else "")


def load_data(n_train: int | None, n_test: int | None) -> tuple[np.ndarray, ...]:
    """Fashion-MNIST as uint8 ``(n, 784)`` images and labels."""
    X_train, y_train, X_test, y_test = load_config_data(CONFIG, None, n_train, n_test)
    return X_train.reshape(len(X_train), -1), y_train, X_test.reshape(len(X_test), -1), y_test


def train_one_epoch(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    """One ``partial_fit`` epoch (the same call for both libraries); its seconds."""
    started = time.perf_counter()
    model.partial_fit(X, y, classes=CLASSES)
    return time.perf_counter() - started


def epoch_details(model: Any) -> dict:
    """What the model recorded about its last epoch (loss, training accuracy...)."""
    if hasattr(model, "history_"):  # sknitro
        return dict(model.history_[-1])
    return {"loss": float(model.loss_)}


# -- 1 + 4: epoch time and accuracy per epoch --------------------------------------------
def run_epochs(contenders: Sequence[Contender], data: tuple[np.ndarray, ...], epochs: int,
               seed: int) -> dict[str, dict]:
    """Train every contender ``epochs`` epochs, interleaved; per-epoch seconds and accuracy."""
    X_train, y_train, X_test, y_test = data
    runs = {}
    for c in contenders:
        runs[c.name] = {"model": c.make(seed), "X_train": c.prepare(X_train),
                        "X_test": c.prepare(X_test), "epoch_seconds": [], "test_accuracy": [],
                        "details": []}
    for epoch in range(1, epochs + 1):
        for c in contenders:
            run = runs[c.name]
            seconds = train_one_epoch(run["model"], run["X_train"], y_train)
            accuracy = float(run["model"].score(run["X_test"], y_test))
            run["epoch_seconds"].append(seconds)
            run["test_accuracy"].append(accuracy)
            run["details"].append(epoch_details(run["model"]))
            print(f"  seed {seed} epoch {epoch:3d} {c.name:8s} {seconds:7.2f} s  "
                  f"test acc {accuracy:.4f}", flush=True)
    return {name: {key: run[key] for key in ("epoch_seconds", "test_accuracy", "details")}
            for name, run in runs.items()}


def summarise_runs(runs_by_seed: list[dict[str, dict]], target: float) -> dict[str, dict]:
    """Per contender: median epoch time after warm-up (pooled over seeds), accuracy per epoch
    (mean and std over seeds), time to target per seed."""
    summary = {}
    for name in runs_by_seed[0]:
        runs = [by_name[name] for by_name in runs_by_seed]
        timed = [s for run in runs for s in run["epoch_seconds"][1:]]  # drop warm-up epochs
        acc = np.array([run["test_accuracy"] for run in runs])
        cum = np.array([cumulative(run["epoch_seconds"]) for run in runs])
        summary[name] = {
            "median_epoch_seconds": statistics.median(timed),
            "warmup_epoch_seconds": [run["epoch_seconds"][0] for run in runs],
            "mean_test_accuracy": acc.mean(axis=0).tolist(),
            "std_test_accuracy": acc.std(axis=0).tolist(),
            "mean_cumulative_seconds": cum.mean(axis=0).tolist(),
            "time_to_target": [time_to_target(run["epoch_seconds"], run["test_accuracy"], target)
                               for run in runs],
        }
    return summary


def paired_ratio(runs_by_seed: list[dict[str, dict]], a: str, b: str) -> float:
    """Median over epochs 2..k of the per-epoch ratio ``a / b`` (interleaved epochs)."""
    ratios = [sa / sb for runs in runs_by_seed
              for sa, sb in zip(runs[a]["epoch_seconds"][1:], runs[b]["epoch_seconds"][1:])]
    return statistics.median(ratios)


# -- 2: roofline ------------------------------------------------------------------------
def nitro_epoch_flops(n_samples: int) -> int:
    """Analytic FLOPs of one sknitro epoch of this MLP (see ``local_loss_epoch_flops``)."""
    return integer_flops(CONFIG, n_samples)


# -- 3: peak memory (child processes) ----------------------------------------------------
def memory_child(name: str, n_train: int | None, epochs: int) -> dict:
    """In the child: load the data, train ``epochs`` epochs, report the peaks."""
    contender = CONTENDERS[name]
    X_train, y_train, _, _ = load_data(n_train, n_test=1)
    X = contender.prepare(X_train)
    del X_train
    model = contender.make(0)
    peaks = training_peaks(lambda: [train_one_epoch(model, X, y_train) for _ in range(epochs)])
    return {"name": name, "epochs": epochs, "n_train": len(y_train), **peaks}


def memory_child_arguments(name: str, args: argparse.Namespace) -> list[str]:
    """The command line of this script as the memory child of ``name``."""
    arguments = ["--memory-child", name, "--memory-epochs", str(args.memory_epochs)]
    for flag, value in (("--n-train", args.n_train), ("--threads", args.threads), ("--lr-inv", args.lr_inv),
                        ("--target-value", args.target_value)):
        if value is not None:
            arguments += [flag, str(value)]
    return arguments


def measure_memory(contenders: Sequence[Contender], args: argparse.Namespace) -> dict:
    results = measure_children(__file__, [c.name for c in contenders], args.memory_epochs,
                               lambda name: memory_child_arguments(name, args))
    if "sknitro" in results and "sklearn" in results:
        a, b = results["sknitro"], results["sklearn"]
        results["ratio_sknitro_over_sklearn"] = memory_ratios(a, b)
    return results


# -- --full: the published schedule --------------------------------------------------------
def run_full_schedule(data: tuple[np.ndarray, ...], seeds: Sequence[int], max_epochs: int,
                      verbose: bool, lr_inv: int = NITRO_PARAMS["lr_inv"],
                      target_value: int = NITRO_PARAMS["target_value"]) -> dict:
    X_train, y_train, X_test, y_test = data
    runs = []
    for seed in seeds:
        model = make_nitro(seed, max_iter=max_epochs, verbose=verbose, lr_inv=lr_inv,
                           target_value=target_value, **FULL_SCHEDULE)
        print(f"  seed {seed}: fit, at most {max_epochs} epochs...", flush=True)
        started = time.perf_counter()
        hit_max_epochs = fit_quietly(model, X_train, y_train)
        seconds = time.perf_counter() - started
        accuracy = float(model.score(X_test, y_test))
        validation = [float(v) for v in model.validation_scores_]
        runs.append({
            "seed": seed, "test_accuracy": accuracy, "epochs_run": model.n_iter_,
            "total_seconds": seconds, "validation_scores": validation,
            "best_validation_score": model.best_validation_score_,
            "kept_epoch": validation.index(model.best_validation_score_) + 1
            if model.best_validation_score_ is not None else None,
            "final_lr_inv": model.lr_inv_,
            "hit_max_epochs": hit_max_epochs,
            "history": model.history_,
        })
        print(f"  seed {seed}: test acc {accuracy:.4f}, {model.n_iter_} epochs, {seconds:.1f} s, "
              f"best val {model.best_validation_score_}", flush=True)
    acc = [run["test_accuracy"] for run in runs]
    return {"runs": runs, "mean_test_accuracy": float(np.mean(acc)),
            "std_test_accuracy": float(np.std(acc))}


# -- reporting ---------------------------------------------------------------------------
def header_lines(title: str, args: argparse.Namespace, data: tuple[np.ndarray, ...],
                 machine: dict) -> list[str]:
    return [
        f"# {title}", "",
        machine_line(machine), "",
        f"Fashion-MNIST {len(data[1])} train / {len(data[3])} test, MLP 784-200-100-50-10, "
        f"batch {BATCH_SIZE}; seeds {list(range(args.seeds))}; BLAS/OpenMP threads "
        f"{args.threads or 'as the libraries choose'}.", "",
    ]


def epoch_markdown(results: dict, args: argparse.Namespace, data: tuple[np.ndarray, ...]) -> str:
    summary, names = results["summary"], list(results["summary"])
    labels = {name: CONTENDERS[name].label for name in names}
    k = args.epochs
    lines = header_lines("Fashion-MNIST MLP: sknitro vs scikit-learn, per epoch", args, data,
                         results["machine"])

    lines += [f"## Epoch time (median of epochs 2..{k}; epoch 1 is a warm-up)", ""]
    headers = ["", *(labels[n] for n in names)]
    row = ["seconds per epoch", *(fmt(summary[n]["median_epoch_seconds"], ".3f") for n in names)]
    if "ratio" in results:
        headers.append("ratio sknitro / peer")
        row.append(fmt(results["ratio"]["median_epoch_time"], ".3f"))
    lines += [md_table(headers, [row]), ""]
    if "ratio" in results:
        lines += [f"Median of the per-epoch ratios (interleaved epochs): "
                  f"{results['ratio']['paired_median']:.3f}.", ""]

    roof = results["roofline"]
    lines += ["## Roofline (float64 GEMM, NumPy; best of the runs before and after the epochs)", ""]
    rows = [[f"float64 GEMM {shape}", f"{g:.1f} GFLOP/s"] for shape, g in roof["gemm_gflops"].items()]
    rows += [["sknitro epoch FLOPs (analytic)", f"{roof['epoch_flops'] / 1e9:.2f} GFLOP"],
             ["epoch time at the roofline", f"{roof['epoch_seconds_at_roofline']:.3f} s"],
             ["sknitro achieved", f"{roof['achieved_gflops']:.2f} GFLOP/s"],
             ["fraction of the roofline", f"{100 * roof['fraction_of_roofline']:.1f} %"]]
    lines += [md_table(["", "value"], rows), ""]

    if results.get("memory"):
        lines += memory_markdown(results["memory"], names, labels, args.memory_epochs)

    lines += ["## Test accuracy per epoch (cumulative training seconds)", ""]
    headers = ["epoch", *(f"{n} acc" for n in names), *(f"{n} cum. s" for n in names)]
    rows = []
    for e in range(k):
        accs = [acc_cell(summary[n], e, args.seeds) for n in names]
        cums = [f"{summary[n]['mean_cumulative_seconds'][e]:.1f}" for n in names]
        rows.append([e + 1, *accs, *cums])
    lines += [md_table(headers, rows), ""]

    lines += [f"## Time to {args.target:.2%} test accuracy (cumulative training seconds)", ""]
    rows = [[seed, *(target_cell(summary[n]["time_to_target"][i]) for n in names)]
            for i, seed in enumerate(range(args.seeds))]
    lines += [md_table(["seed", *(labels[n] for n in names)], rows), ""]
    return "\n".join(lines)


def memory_markdown(memory: dict, names: Sequence[str], labels: dict, epochs: int) -> list[str]:
    lines = [f"## Peak memory (child process per model, {epochs} training epoch(s))", ""]
    ratios = memory.get("ratio_sknitro_over_sklearn")
    table = memory_table(memory, names, labels, {"ratio sknitro / peer": ratios} if ratios else None)
    return lines + [table, ""]


def acc_cell(summary: dict, epoch: int, n_seeds: int) -> str:
    mean = summary["mean_test_accuracy"][epoch]
    if n_seeds == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {summary['std_test_accuracy'][epoch]:.4f}"


def full_markdown(results: dict, args: argparse.Namespace, data: tuple[np.ndarray, ...]) -> str:
    full = results["full"]
    lines = header_lines(f"Fashion-MNIST MLP: sknitro, published schedule, lr_inv {args.lr_inv}, "
                         f"target_value {args.target_value}",
                         args, data, results["machine"])
    lines += [f"Early stopping on a {FULL_SCHEDULE['validation_fraction']:.0%} validation split, "
              f"at most {args.max_epochs} epochs, n_iter_no_change "
              f"{FULL_SCHEDULE['n_iter_no_change']}, lr_inv x{FULL_SCHEDULE['lr_plateau_factor']} "
              f"after {FULL_SCHEDULE['lr_plateau_patience']} epochs without a gain of "
              f"{FULL_SCHEDULE['tol']}. Test accuracy of the kept (best validation) model.", ""]
    rows = [[run["seed"], f"{run['test_accuracy']:.4f}", run["epochs_run"], run["kept_epoch"],
             fmt(run["best_validation_score"], ".4f"), run["final_lr_inv"],
             f"{run['total_seconds']:.1f}"] for run in full["runs"]]
    lines += [md_table(["seed", "test accuracy", "epochs run", "kept epoch", "best validation",
                        "final lr_inv", "total s"], rows), "",
              f"**Test accuracy: {full['mean_test_accuracy']:.4f} ± {full['std_test_accuracy']:.4f}** "
              f"(mean ± std over {len(full['runs'])} seed(s)).", "",
              "Validation accuracy per epoch (`validation_scores_`):", ""]
    lines += [f"- seed {run['seed']}: " + ", ".join(f"{v:.4f}" for v in run["validation_scores"])
              for run in full["runs"]]
    return "\n".join(lines) + "\n"


def write_plots(results: dict, out: Path, target: float, stem: str = "mlp_fashion") -> list[Path]:
    """Accuracy and epoch-time plots, if matplotlib is importable."""
    summary, title = results["summary"], "Fashion-MNIST MLP 784-200-100-50-10, batch 64"
    accuracy = [{"y": s["mean_test_accuracy"], "marker": "o", "label": CONTENDERS[name].label}
                for name, s in summary.items()]
    seconds = [{"y": results["runs"][0][name]["epoch_seconds"], "marker": "o",
                "label": CONTENDERS[name].label} for name in summary]
    paths = [line_plot(out / f"{stem}_accuracy.png", accuracy, "epoch", "test accuracy", title,
                       hline=(target, f"target {target:.0%}")),
             line_plot(out / f"{stem}_epoch_time.png", seconds, "epoch",
                       "seconds per epoch (seed 0)", title)]
    return [path for path in paths if path is not None]


# -- the two modes ------------------------------------------------------------------------
def epoch_mode(args: argparse.Namespace, out: Path, suffix: str = "") -> None:
    contenders = [CONTENDERS["sknitro"]] + ([] if args.skip_peer else [CONTENDERS["sklearn"]])
    results: dict[str, Any] = {"config": vars(args), "machine": machine_info()}
    if not args.skip_memory:  # first: the children must not inherit a big parent's ru_maxrss
        print("[memory] peak memory of training, one child process per model", flush=True)
        results["memory"] = measure_memory(contenders, args)
    data = load_data(args.n_train, args.n_test)
    print("[roofline] float64 GEMM throughput, before the epochs", flush=True)
    gemm_before = measure_gemm(GEMM_SHAPES, "before")
    print(f"[epochs] {args.epochs} epochs x {args.seeds} seed(s), {len(data[1])} train / "
          f"{len(data[3])} test samples", flush=True)
    results["runs"] = [run_epochs(contenders, data, args.epochs, seed) for seed in range(args.seeds)]
    results["summary"] = summarise_runs(results["runs"], args.target)
    if not args.skip_peer:
        results["ratio"] = {
            "median_epoch_time": ratio(results["summary"]["sknitro"]["median_epoch_seconds"],
                                       results["summary"]["sklearn"]["median_epoch_seconds"]),
            "paired_median": paired_ratio(results["runs"], "sknitro", "sklearn")}
    print("[roofline] float64 GEMM throughput, after the epochs", flush=True)
    results["roofline"] = roofline_summary([gemm_before, measure_gemm(GEMM_SHAPES, "after")],
                                           nitro_epoch_flops(len(data[1])),
                                           results["summary"]["sknitro"]["median_epoch_seconds"])
    results["machine"]["load_average_end"] = load_average()
    print_epoch_summary(results)
    stem = "mlp_fashion" + suffix
    write_json(out / f"{stem}.json", results)
    write_text(out / f"{stem}.md", epoch_markdown(results, args, data))
    write_plots(results, out, args.target, stem)


def print_epoch_summary(results: dict) -> None:
    for name, s in results["summary"].items():
        print(f"{name}: median epoch {s['median_epoch_seconds']:.3f} s, final test acc "
              f"{s['mean_test_accuracy'][-1]:.4f}, time to target {s['time_to_target']}", flush=True)
    if "ratio" in results:
        print(f"epoch time ratio sknitro/peer: {results['ratio']['median_epoch_time']:.3f} "
              f"(paired {results['ratio']['paired_median']:.3f})", flush=True)
    roof = results["roofline"]
    print(f"roofline {roof['roofline_gflops']:.1f} GFLOP/s; sknitro achieves "
          f"{roof['achieved_gflops']:.2f} GFLOP/s = {100 * roof['fraction_of_roofline']:.1f} %", flush=True)


def full_mode(args: argparse.Namespace, out: Path, suffix: str = "") -> None:
    results: dict[str, Any] = {"config": vars(args), "machine": machine_info(),
                               "params": {**NITRO_PARAMS, **FULL_SCHEDULE, "max_iter": args.max_epochs,
                                          "lr_inv": args.lr_inv, "target_value": args.target_value}}
    data = load_data(args.n_train, args.n_test)
    print(f"[full] published schedule, {args.seeds} seed(s), {len(data[1])} train / "
          f"{len(data[3])} test samples", flush=True)
    results["full"] = run_full_schedule(data, range(args.seeds), args.max_epochs, args.verbose,
                                        args.lr_inv, args.target_value)
    full = results["full"]
    print(f"test accuracy {full['mean_test_accuracy']:.4f} ± {full['std_test_accuracy']:.4f}", flush=True)
    stem = "mlp_fashion_full" + suffix
    write_json(out / f"{stem}.json", results)
    write_text(out / f"{stem}.md", full_markdown(results, args, data))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs of the per-epoch mode; the first is a warm-up (default 5)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    parser.add_argument("--n-train", type=int, default=None, help="first N training samples (smoke runs)")
    parser.add_argument("--n-test", type=int, default=None, help="first N test samples (smoke runs)")
    parser.add_argument("--target", type=float, default=0.88, help="target test accuracy (default 0.88)")
    parser.add_argument("--full", action="store_true",
                        help="fit once per seed with the published early-stopping schedule")
    parser.add_argument("--max-epochs", type=int, default=150, help="max_iter of --full (default 150)")
    parser.add_argument("--lr-inv", type=int, default=NITRO_PARAMS["lr_inv"],
                        help="initial lr_inv of sknitro (default: the published 512; sknitro's default "
                             "is 256); another value writes mlp_fashion_lr<N>.* (--full: mlp_fashion_full_lr<N>.*)")
    parser.add_argument("--target-value", type=int, default=NITRO_PARAMS["target_value"],
                        help="target_value of sknitro (default: the published 32; sknitro's default is 64)")
    parser.add_argument("--memory-epochs", type=int, default=1,
                        help="epochs trained by each memory child (default 1)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="output directory (default benchmarks/results)")
    parser.add_argument("--skip-peer", action="store_true", help="do not run scikit-learn")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit BLAS/OpenMP threads (threadpoolctl) for both models and the "
                             "roofline, e.g. 1 on a busy shared machine; default: the libraries' own")
    parser.add_argument("--verbose", action="store_true", help="--full: the estimator's per-epoch log")
    parser.add_argument("--memory-child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2 and not args.full:
        parser.error("--epochs must be at least 2 (epoch 1 is a warm-up)")
    for name in ("seeds", "max_epochs", "memory_epochs", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    call_with_threads(args.threads, lambda: run(args))


def run(args: argparse.Namespace) -> None:
    suffix = use_params(args.lr_inv, args.target_value)
    if args.memory_child:
        print_memory_result(memory_child(args.memory_child, args.n_train, args.memory_epochs))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (full_mode if args.full else epoch_mode)(args, args.out, suffix)


if __name__ == "__main__":
    main()
