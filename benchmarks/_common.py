"""Helpers shared by the benchmarks of ``benchmarks/``: the machine, the float64 GEMM roofline,
analytic FLOP counts, quiet fits, peak memory measured in child processes, and the JSON /
Markdown / PNG writers. The benchmark scripts import this module as ``_common`` (they run as
scripts, so their own directory is on ``sys.path``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning

import sknitro

# The published NITRO-D training schedule (algorithm.md §7), monitored on a validation split.
PUBLISHED_SCHEDULE = dict(early_stopping=True, validation_fraction=0.1, n_iter_no_change=35,
                          lr_plateau_patience=15, lr_plateau_factor=3, tol=0.01)

MEMORY_MARKER = "MEMORY_RESULT "
MEMORY_FIELDS = ("whole_process_peak_rss_kib", "training_peak_rss_kib", "rss_before_training_kib",
                 "ru_maxrss_kib", "tracemalloc_peak_bytes")
KIB_PER_MIB = 1024


# -- threads ------------------------------------------------------------------------------
def call_with_threads(threads: int | None, function: Callable[[], Any]) -> Any:
    """Call ``function()`` with BLAS/OpenMP pools limited to ``threads`` (threadpoolctl); None:
    the libraries' own choice. Setting ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    MKL_NUM_THREADS=1`` in the environment as well also covers pools created later."""
    if threads is None:
        return function()
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=threads):
        return function()


# -- roofline -------------------------------------------------------------------------------
def gemm_gflops(m: int, k: int, n: int, dtype: type = np.float64, repeats: int = 7,
                min_seconds: float = 0.05) -> float:
    """Best-of-``repeats`` GEMM throughput of ``(m, k) @ (k, n)`` in ``dtype``, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    out = np.empty((m, n), dtype=dtype)

    def timed(calls: int) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=out)
        return time.perf_counter() - started

    calls = 1
    while timed(calls) < min_seconds:  # calibrate: one repetition lasts >= min_seconds
        calls *= 2
    best = min(timed(calls) for _ in range(repeats))
    return 2 * m * k * n * calls / best / 1e9


def measure_gemm(shapes: dict[str, tuple[int, int, int]], when: str,
                 dtype: type = np.float64) -> dict[str, float]:
    """GFLOP/s of every named ``(m, k, n)`` GEMM shape, printed as it goes."""
    gemm = {shape: gemm_gflops(*dims, dtype=dtype) for shape, dims in shapes.items()}
    for shape, gflops in gemm.items():
        print(f"  {np.dtype(dtype).name} GEMM {shape} ({when}): {gflops:.1f} GFLOP/s", flush=True)
    return gemm


def roofline_summary(gemm_runs: Sequence[dict[str, float]], epoch_flops: int,
                     epoch_seconds: float) -> dict:
    """The roofline is the best GEMM throughput measured; an epoch's FLOPs against it."""
    gemm = {shape: max(run[shape] for run in gemm_runs) for shape in gemm_runs[0]}
    roofline = max(gemm.values())
    achieved = epoch_flops / epoch_seconds / 1e9
    return {"gemm_gflops": gemm, "gemm_runs": list(gemm_runs), "roofline_gflops": roofline,
            "epoch_flops": epoch_flops,
            "epoch_seconds_at_roofline": epoch_flops / roofline / 1e9,
            "achieved_gflops": achieved, "fraction_of_roofline": achieved / roofline}


def local_loss_epoch_flops(block_macs: Sequence[int], head_inputs: Sequence[int], output_in: int,
                           n_classes: int, n_samples: int) -> int:
    """Analytic FLOPs (2 per multiply-add) of one local-loss (NITRO-D or float LES) epoch.

    Per sample: every block's forward layer runs forward and its weight gradient
    (``block_macs`` multiply-adds each; its input gradient is never needed); every learning
    head (``head_inputs`` features -> ``n_classes``) runs forward, input gradient and weight
    gradient; the output layer forward and weight gradient. Every term is linear in the batch
    size, so an epoch is the per-sample count times ``n_samples`` (last partial batch included).
    """
    macs = sum(2 * m for m in block_macs) + sum(3 * h * n_classes for h in head_inputs)
    macs += 2 * output_in * n_classes
    return 2 * macs * n_samples


def mlp_layer_sizes(n_features: int, hidden: Sequence[int], n_classes: int) -> list[tuple[int, int]]:
    """``(in, out)`` of every dense layer of an MLP, the output layer last."""
    widths = [n_features, *hidden, n_classes]
    return list(zip(widths[:-1], widths[1:]))


def local_loss_mlp_flops(n_samples: int, n_features: int, hidden: Sequence[int],
                         n_classes: int) -> int:
    """FLOPs of one local-loss epoch of a dense network (see :func:`local_loss_epoch_flops`)."""
    layers = mlp_layer_sizes(n_features, hidden, n_classes)
    return local_loss_epoch_flops([i * o for i, o in layers[:-1]], list(hidden), layers[-1][0],
                                  n_classes, n_samples)


def backprop_mlp_flops(n_samples: int, n_features: int, hidden: Sequence[int],
                       n_classes: int) -> int:
    """FLOPs of one backpropagation epoch of an MLP: every layer's forward and weight gradient,
    and the input gradient of every layer but the first (as scikit-learn computes it)."""
    layers = mlp_layer_sizes(n_features, hidden, n_classes)
    macs = sum(2 * i * o for i, o in layers) + sum(i * o for i, o in layers[1:])
    return 2 * macs * n_samples


# -- fitting -------------------------------------------------------------------------------------
def fit_quietly(model: Any, X: np.ndarray, y: np.ndarray) -> bool:
    """``model.fit(X, y)``; whether it stopped at its maximum of epochs (ConvergenceWarning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X, y)
    return any(issubclass(w.category, ConvergenceWarning) for w in caught)


# -- accuracy curves ----------------------------------------------------------------------------
def cumulative(values: Sequence[float]) -> list[float]:
    return [float(v) for v in np.cumsum(values)]


def time_to_target(epoch_seconds: Sequence[float], accuracy: Sequence[float],
                   target: float) -> dict | None:
    """Cumulative training seconds (and epoch) at which ``accuracy`` first reaches ``target``."""
    for epoch, (seconds, acc) in enumerate(zip(cumulative(epoch_seconds), accuracy), start=1):
        if acc >= target:
            return {"seconds": seconds, "epoch": epoch}
    return None


def target_cell(hit: dict | None) -> str:
    return "not reached" if hit is None else f"{hit['seconds']:.1f} s (epoch {hit['epoch']})"


# -- peak memory (child processes) ----------------------------------------------------------
def proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), e.g. ``VmHWM``; None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def ru_maxrss_kib() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # bytes on macOS


def training_peaks(train: Callable[[], Sequence[float]]) -> dict:
    """Run ``train()`` (which returns its epoch seconds) in a process whose data is loaded
    already, and report the memory peaks: the peak resident set of the whole process and of
    training alone (``VmHWM``, reset before training where Linux allows), the RSS before
    training, ``ru_maxrss`` and the ``tracemalloc`` peak of the training call."""
    rss_before = proc_status_kib("VmRSS")
    loading_peak, loading_maxrss = proc_status_kib("VmHWM"), ru_maxrss_kib()  # the reset forgets both
    can_reset = reset_peak_rss()
    tracemalloc.start()
    seconds = list(train())
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = proc_status_kib("VmHWM")
    return {"epoch_seconds": seconds, "rss_before_training_kib": rss_before,
            "training_peak_rss_kib": peak if can_reset else None,
            "whole_process_peak_rss_kib": max(loading_peak, peak) if peak is not None else None,
            "ru_maxrss_kib": max(loading_maxrss, ru_maxrss_kib()),
            "tracemalloc_peak_bytes": traced_peak}


def print_memory_result(result: dict) -> None:
    """The child's last word: its result on one marked line (see :func:`run_memory_child`)."""
    print(MEMORY_MARKER + json.dumps(result), flush=True)


def run_memory_child(script: str | Path, arguments: Sequence[str]) -> dict:
    """Run ``python script *arguments`` (a memory child) and parse its result line.

    Children run before the parent loads any data: Linux carries ``ru_maxrss`` across
    ``exec``, so a child could inherit a big parent's peak; ``VmHWM`` (the peak of the
    child's own address space) is the primary figure.
    """
    command = [sys.executable, os.path.abspath(script), *arguments]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MEMORY_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"memory child {' '.join(arguments)} failed (exit {done.returncode}):\n"
                           f"{done.stderr}")
    return json.loads(lines[-1][len(MEMORY_MARKER):])


def measure_memory(script: str | Path, names: Sequence[str], epochs: int,
                   arguments: Callable[[str], Sequence[str]]) -> dict[str, dict]:
    """The peaks of training each of ``names`` (a model or a method), each in a memory child:
    ``script`` run with ``arguments(name)``, one after the other."""
    results = {}
    for name in names:
        print(f"  memory child: {name}, {epochs} epoch(s)...", flush=True)
        result = run_memory_child(script, arguments(name))
        print(f"  {name}: peak RSS {mib(result['whole_process_peak_rss_kib'])} MiB, during "
              f"training {mib(result['training_peak_rss_kib'])} MiB, tracemalloc peak "
              f"{result['tracemalloc_peak_bytes'] / 2**20:.1f} MiB", flush=True)
        results[name] = result
    return results


def memory_ratios(a: dict, b: dict) -> dict[str, float | None]:
    """``a / b`` for every memory figure."""
    return {key: ratio(a[key], b[key]) for key in MEMORY_FIELDS}


MEMORY_ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("whole_process_peak_rss_kib", "peak RSS, whole process (VmHWM), MiB", lambda kib: mib(kib)),
    ("training_peak_rss_kib", "peak RSS during training, MiB", lambda kib: mib(kib)),
    ("rss_before_training_kib", "RSS before training (data loaded), MiB", lambda kib: mib(kib)),
    ("ru_maxrss_kib", "ru_maxrss, MiB", lambda kib: mib(kib)),
    ("tracemalloc_peak_bytes", "tracemalloc peak of training, MiB", lambda b: f"{b / 2**20:.1f}"),
)


def memory_table(memory: dict, names: Sequence[str], labels: dict[str, str],
                 ratio_columns: dict[str, dict[str, float | None]] | None = None) -> str:
    """Markdown table of the memory figures of every child, plus ratio columns (title -> ratios)."""
    ratio_columns = ratio_columns or {}
    headers = ["", *(labels[n] for n in names), *ratio_columns]
    rows = []
    for key, label, to_text in MEMORY_ROWS:
        rows.append([label, *(to_text(memory[n][key]) for n in names),
                     *(fmt(ratios.get(key), ".3f") for ratios in ratio_columns.values())])
    return md_table(headers, rows)


# -- the machine ------------------------------------------------------------------------------
def machine_info() -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": load_average(),
        "numpy": np.__version__, "scikit-learn": sklearn.__version__,
        "sknitro": sknitro.__version__, "sknitro_config": sknitro.get_config(),
        "sknitro_kernels": kernel_implementation(),
        "thread_env": {name: os.environ.get(name) for name in
                       ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = threadpool_info()
    except ImportError:
        info["threadpools"] = None
    return info


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# the flags that decide which kernels run (and which BLAS kernels the peers get)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "asimd", "asimddp")


def cpu_flags() -> str:
    """The CPU's flags among ``SPEED_FLAGS``, as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return " ".join(flag for flag in SPEED_FLAGS if flag in present)
    except OSError:
        pass
    return ""


def kernel_implementation() -> str:
    """The kernels sknitro's estimators use here now (see sknitro.nn.kernels)."""
    try:
        from sknitro.nn.kernels import select
    except ImportError:  # an older sknitro
        return "unknown"
    return select().name


def machine_line(machine: dict) -> str:
    """One Markdown line: date, CPU and its flags, sknitro's kernels, load, library versions."""
    return (f"{machine['date']} · {machine['cpu_model']} ({machine.get('cpu_flags', '')}) · "
            f"sknitro kernels {machine.get('sknitro_kernels', 'unknown')} · {machine['usable_cpus']} usable CPUs · "
            f"load average {', '.join(f'{x:.2f}' for x in machine['load_average'] or [])} · "
            f"numpy {machine['numpy']} · scikit-learn {machine['scikit-learn']} · "
            f"sknitro {machine['sknitro']}")


# -- formatting and writers --------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / KIB_PER_MIB:.1f}"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=json_default) + "\n")
    print(f"wrote {path}", flush=True)


def write_text(path: Path, text: str) -> None:
    path.write_text(text)
    print(f"wrote {path}", flush=True)


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pyplot() -> Any | None:
    """matplotlib's pyplot on the Agg backend, or None (and a message) when not importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not importable: no plots", flush=True)
        return None
    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write a figure as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}", flush=True)
    return path


def line_plot(path: Path, series: Sequence[dict], xlabel: str, ylabel: str, title: str,
              hline: tuple[float, str] | None = None) -> Path | None:
    """Lines over epochs: each series a dict of ``y`` (one value per epoch) and keyword
    arguments of ``Axes.plot`` (``label``, ``color``...); ``hline``: (y, label) of a dashed line."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s in series:
        style = {key: value for key, value in s.items() if key != "y"}
        ax.plot(range(1, len(s["y"]) + 1), s["y"], **style)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
