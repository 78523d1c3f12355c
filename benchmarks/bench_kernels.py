"""Benchmark: training speed of each kernel implementation this CPU runs, in one run.

    python benchmarks/bench_kernels.py [--mlp-epochs 5] [--cnn-samples 6000] [--vgg-samples 512]
                                       [--cnn-epochs 4] [--baseline PATH [--baseline-without-vnni]]
                                       [--avx2-cpu-build PATH]

Every row is one implementation (``config_context(kernels=...)``: numpy, c, avx2, vnni,
whichever the CPU runs), one thread unless stated:

- Fashion-MNIST MLP 784-200-100-50-10 (the published hyperparameters of paper_table.py's
  ``mlp-fashion``), seconds per epoch on the 60,000 images (median of epochs 2..N), against
  scikit-learn's ``MLPClassifier`` (adam, same sizes and batch) timed in the same run;
- the compact CNN (conv32-pool-conv64-pool-dense1024), seconds per epoch on ``--cnn-samples``
  images (median of epochs 2..``--cnn-epochs``), scaled to 60,000, on one thread and on two,
  and with the published dropout (0.1), and with 0.5 (int16 features), on one thread;
- VGG8B (the published network), the same on ``--vgg-samples`` images.

``--baseline PATH`` times the two CNN jobs again with another sknitro checkout (built, on
the same CPU: say the last release) in a child process, for a before/after ratio; both
must train to the same weights, which the table shows by a hash. ``--baseline-without-vnni``
times it once more with its VNNI products off, as it would run on a CPU without them.

On a CPU with AVX-512 the ``avx2`` rows still run the AVX-512 builds of the portable loops
(heads, scaling, the activation's backward: the loader picks the best build the CPU has).
``--avx2-cpu-build PATH`` adds rows of this sknitro checked out at PATH and built with
``CFLAGS=-DSKNITRO_PORTABLE_ARCH=x86-64-v3``, whose loops are those an AVX2 CPU runs.
Results go to benchmarks/results/kernels.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

CNN_JOBS = {"compact": dict(architecture="compact", hidden_layer_sizes=(1024,)),
            "compact-dropout": dict(architecture="compact", hidden_layer_sizes=(1024,), dropout=0.1),
            # past a rate of 0.25 the dense layer's input is int16: the pair products take its digits
            "compact-dropout-0.5": dict(architecture="compact", hidden_layer_sizes=(1024,), dropout=0.5),
            "vgg8b": dict(architecture="vgg8b", hidden_layer_sizes=(1024,))}
EPOCH_IMAGES = 60000


def weights_hash(model) -> str:
    return hashlib.sha1(b"".join(np.ascontiguousarray(w).tobytes() for w in model.weights_)).hexdigest()[:12]


def time_cnn(job: str, samples: int, threads: int, kernels: str | None, epochs: int, device: str = "cpu") -> dict:
    """A CNN job's seconds per epoch on the first ``samples`` training images: the median of
    epochs 2..``epochs`` (the first warms up); ``kernels`` None: the settings of the sknitro
    that is imported (a baseline may not know the setting)."""
    import contextlib

    from threadpoolctl import threadpool_limits

    import sknitro
    from sknitro.datasets import load_fashion_mnist

    X, y, _, _ = load_fashion_mnist(n_train=samples, n_test=1)
    context = sknitro.config_context(kernels=kernels) if kernels else contextlib.nullcontext()
    model = sknitro.NitroCNNClassifier(**CNN_JOBS[job], max_iter=epochs, early_stopping=False, random_state=0,
                                       device=device)
    with threadpool_limits(threads), context, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    seconds = statistics.median(record["seconds"] for record in model.history_[1:] or model.history_)
    return {"seconds": seconds, "epoch_seconds": seconds * EPOCH_IMAGES / samples, "weights": weights_hash(model)}


def time_mlp(epochs: int, kernels: str, device: str = "cpu") -> dict:
    from threadpoolctl import threadpool_limits

    import sknitro
    from paper_table import CONFIGS, integer_params
    from sknitro.datasets import load_fashion_mnist

    X, y, _, _ = load_fashion_mnist()
    X = X.reshape(len(X), -1)
    model = sknitro.NitroMLPClassifier(**integer_params(CONFIGS["mlp-fashion"]), max_iter=epochs,
                                       early_stopping=False, random_state=0, device=device)
    with threadpool_limits(1), sknitro.config_context(kernels=kernels), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    seconds = [record["seconds"] for record in model.history_]
    return {"epoch_seconds": statistics.median(seconds[1:] or seconds), "weights": weights_hash(model)}


def time_peer(epochs: int) -> float:
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from paper_table import CONFIGS
    from sknitro.datasets import load_fashion_mnist

    X, y, _, _ = load_fashion_mnist()
    X = X.reshape(len(X), -1) / 255.0
    peer = MLPClassifier(hidden_layer_sizes=CONFIGS["mlp-fashion"].hidden, batch_size=64, random_state=0)
    seconds = []
    with threadpool_limits(1):
        for _ in range(epochs):
            started = time.perf_counter()
            peer.partial_fit(X, y, classes=np.arange(10))
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:] or seconds)


def in_child(path: Path, call: str, preamble: str = "", env: dict | None = None) -> dict:
    """``call`` (an expression of this module, ``bench_kernels``) evaluated with the sknitro
    checkout at ``path`` in a child process (with ``env`` added to its environment), after
    ``preamble``; its dict result."""
    # The child starts in ``path``: with ``python -c``, the working directory comes first on
    # sys.path, and started from this checkout it would time this sknitro, not that one.
    code = (f"import json, sys; sys.path.insert(1, {str(Path(__file__).parent)!r}); import bench_kernels, sknitro; "
            f"{preamble}print(json.dumps({{'module': sknitro.__file__, **bench_kernels.{call}}}))")
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=path, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(result["module"]).resolve().is_relative_to(path.resolve()):
        raise RuntimeError(f"the child imported {result['module']}, not the sknitro of {path}")
    return result


# An AVX2 CPU, emulated: OpenBLAS's AVX2 kernels (numpy's OpenBLAS picks its kernels by
# OPENBLAS_CORETYPE), and a sknitro whose portable loops are built for x86-64-v3 only.
AVX2_BLAS = {"OPENBLAS_CORETYPE": "Haswell"}
AVX2_BLAS_CHECK = ("from threadpoolctl import threadpool_info; assert all(i.get('architecture') == 'Haswell' "
                   "for i in threadpool_info() if i['internal_api'] == 'openblas'); ")
AVX2_CPU_LOOPS = ("arch=x86-64-v3",)  # what an --avx2-cpu-build's portable loops are built for


def baseline_cnn(path: Path, job: str, samples: int, threads: int, epochs: int, without_vnni: bool = False,
                 avx2_blas: bool = False) -> dict:
    """``time_cnn`` with the sknitro of ``path`` (its own settings); ``without_vnni``: with
    that sknitro's VNNI products off, as it runs on a CPU without AVX-512 VNNI (a sknitro
    whose VNNI kernels are switched by ``sknitro.nn.fused.VNNI``, like commit a817753);
    ``avx2_blas``: on OpenBLAS's AVX2 kernels too."""
    switch = "import sknitro.nn.fused as fused; assert hasattr(fused, 'VNNI'); fused.VNNI = False; " \
        if without_vnni else ""
    return in_child(path, f"time_cnn({job!r}, {samples}, {threads}, None, {epochs})",
                    switch + (AVX2_BLAS_CHECK if avx2_blas else ""), AVX2_BLAS if avx2_blas else None)


def avx2_cpu(path: Path, call: str) -> dict:
    """``call`` as on an AVX2 CPU: with the sknitro of ``path``, built with
    ``CFLAGS=-DSKNITRO_PORTABLE_ARCH=x86-64-v3`` (its portable loops -- heads, scaling, the
    activation's backward -- as an AVX2 CPU runs them, where this CPU would run their AVX-512
    builds), and OpenBLAS on its AVX2 kernels."""
    check = (f"from sknitro import _fused; assert _fused.PORTABLE_TARGETS == {AVX2_CPU_LOOPS!r}, "
             "'build it with CFLAGS=-DSKNITRO_PORTABLE_ARCH=x86-64-v3'; ")
    return in_child(path, call, check + AVX2_BLAS_CHECK, AVX2_BLAS)


def time_peer_result(epochs: int) -> dict:
    """``time_peer`` as a dict (a child's result)."""
    return {"epoch_seconds": time_peer(epochs)}


def avx2_cpu_table(result: dict, args: argparse.Namespace) -> list[str]:
    """The emulated AVX2 CPU's rows (``--avx2-cpu-build``), beside this CPU's ``avx2`` row."""
    rows, cnn = result["avx2_cpu"], result["cnn"]
    if not rows:
        return []
    lines = ["An AVX2 CPU, emulated: sknitro's `avx2` kernels with its portable loops built for x86-64-v3 "
             f"(`{args.avx2_cpu_build}`, `CFLAGS=-DSKNITRO_PORTABLE_ARCH=x86-64-v3`), and OpenBLAS on its AVX2 "
             "kernels (`OPENBLAS_CORETYPE=Haswell`) for the peer and the baseline: every product and loop on "
             "AVX2 code, on this CPU's cores and caches.", "",
             "| job | sknitro `avx2`, emulated AVX2 CPU | `avx2` row above | peer on AVX2 BLAS | ratio "
             "| weights |",
             "|---|---|---|---|---|---|"]
    if "mlp" in rows:
        mlp, peer = rows["mlp"]["epoch_seconds"], rows["mlp_peer"]["epoch_seconds"]
        here = result["mlp"]["avx2"]["epoch_seconds"]
        lines.append(f"| Fashion-MNIST MLP, s / epoch | {mlp:.2f} | {here:.2f} | MLPClassifier {peer:.2f} | "
                     f"{mlp / peer:.3f}× | `{rows['mlp']['weights']}` |")
    for key, row in rows.items():
        if key.startswith("mlp") or key.endswith("baseline"):
            continue
        base, one = rows.get(f"{key} baseline"), rows.get(key.split("/")[0] + "/1")
        if base:
            vs = f"baseline without VNNI {base['epoch_seconds']:.1f} | {row['seconds'] / base['seconds']:.2f}×"
        elif not key.endswith("/1") and one:
            vs = f" | {row['seconds'] / one['seconds']:.2f}× 1 thread"
        else:
            vs = " | "
        lines.append(f"| {key.replace('/', ' CNN, ')} thread(s), s / 60k epoch | {row['epoch_seconds']:.1f} | "
                     f"{cnn[key]['avx2']['epoch_seconds']:.1f} | {vs} | `{row['weights']}` |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlp-epochs", type=int, default=5)
    parser.add_argument("--cnn-samples", type=int, default=6000)
    parser.add_argument("--vgg-samples", type=int, default=512)
    parser.add_argument("--cnn-epochs", type=int, default=4, help="epochs per CNN job: the first warms up")
    parser.add_argument("--baseline", type=Path, help="another sknitro checkout (built), timed on the CNN jobs")
    parser.add_argument("--baseline-without-vnni", action="store_true",
                        help="also time the baseline with its VNNI products off (as on an AVX2 CPU)")
    parser.add_argument("--avx2-cpu-build", type=Path,
                        help="this sknitro built with CFLAGS=-DSKNITRO_PORTABLE_ARCH=x86-64-v3: its avx2 kernels "
                             "timed again with the portable loops an AVX2 CPU runs")
    parser.add_argument("--skip-mlp", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    from _common import machine_info, machine_line, write_json, write_text

    from sknitro.nn.kernels import AVAILABLE

    machine = machine_info()
    result: dict = {"machine": machine, "kernels": list(AVAILABLE), "mlp": {}, "cnn": {}, "baseline": {},
                    "baseline_without_vnni": {}, "avx2_cpu": {}}
    if not args.skip_mlp:
        result["mlp_peer_epoch_seconds"] = time_peer(args.mlp_epochs)
        print(f"MLPClassifier: {result['mlp_peer_epoch_seconds']:.2f} s per epoch", flush=True)
        for name in AVAILABLE:
            result["mlp"][name] = time_mlp(args.mlp_epochs, name)
            print(f"MLP {name}: {result['mlp'][name]}", flush=True)
        if args.avx2_cpu_build:
            result["avx2_cpu"]["mlp"] = avx2_cpu(args.avx2_cpu_build, f"time_mlp({args.mlp_epochs}, 'avx2')")
            result["avx2_cpu"]["mlp_peer"] = avx2_cpu(args.avx2_cpu_build, f"time_peer_result({args.mlp_epochs})")
            print(f"MLP on an emulated AVX2 CPU: {result['avx2_cpu']}", flush=True)
    jobs = [("compact", args.cnn_samples, 1), ("compact", args.cnn_samples, 2),
            ("compact-dropout", args.cnn_samples, 1), ("compact-dropout-0.5", args.cnn_samples, 1),
            ("vgg8b", args.vgg_samples, 1)]
    for job, samples, threads in jobs:
        key = f"{job}/{threads}"
        result["cnn"][key] = {name: time_cnn(job, samples, threads, name, args.cnn_epochs) for name in AVAILABLE}
        print(f"{key}: {result['cnn'][key]}", flush=True)
        if args.avx2_cpu_build:
            call = f"time_cnn({job!r}, {samples}, {threads}, 'avx2', {args.cnn_epochs})"
            result["avx2_cpu"][key] = avx2_cpu(args.avx2_cpu_build, call)
            if args.baseline and threads == 1:
                result["avx2_cpu"][f"{key} baseline"] = baseline_cnn(args.baseline, job, samples, threads,
                                                                     args.cnn_epochs, without_vnni=True,
                                                                     avx2_blas=True)
            print(f"{key} on an emulated AVX2 CPU: {result['avx2_cpu']}", flush=True)
        if args.baseline and threads == 1:
            result["baseline"][key] = baseline_cnn(args.baseline, job, samples, threads, args.cnn_epochs)
            print(f"{key} baseline: {result['baseline'][key]}", flush=True)
            if args.baseline_without_vnni:
                result["baseline_without_vnni"][key] = baseline_cnn(args.baseline, job, samples, threads,
                                                                    args.cnn_epochs, True)
                print(f"{key} baseline without VNNI: {result['baseline_without_vnni'][key]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "kernels.json", result)

    lines = ["# Training speed of each kernel implementation", "", machine_line(machine), "",
             f"CPU flags: {machine['cpu_flags']}", "",
             "`python benchmarks/bench_kernels.py " + " ".join(sys.argv[1:]) + "`; one thread unless stated.", ""]
    if result["mlp"]:
        peer = result["mlp_peer_epoch_seconds"]
        lines += ["Fashion-MNIST MLP 784-200-100-50-10, seconds per epoch (median of epochs 2-"
                  f"{args.mlp_epochs}); scikit-learn's MLPClassifier: {peer:.2f} s in the same run.", "",
                  "| kernels | s / epoch | vs MLPClassifier | weights |", "|---|---|---|---|"]
        lines += [f"| {name} | {row['epoch_seconds']:.2f} | {row['epoch_seconds'] / peer:.3f}× | `{row['weights']}` |"
                  for name, row in result["mlp"].items()]
        lines.append("")
    for key, rows in result["cnn"].items():
        job, threads = key.split("/")
        samples = args.vgg_samples if job == "vgg8b" else args.cnn_samples
        one = result["cnn"].get(f"{job}/1", {})
        bases = {"baseline": result["baseline"].get(key),
                 "baseline without its VNNI products": result["baseline_without_vnni"].get(key)}
        bases = {label: base for label, base in bases.items() if base}
        lines += [f"{job} CNN, {threads} thread(s): seconds per epoch on {samples} images (median of epochs "
                  f"2-{args.cnn_epochs}), scaled to 60,000", "",
                  "| kernels | s / 60k epoch | vs 1 thread | " + "".join(f"vs {label} | " for label in bases)
                  + "weights |", "|---|---|---|" + "---|" * len(bases) + "---|"]
        for name, row in rows.items():
            vs_one = f"{row['seconds'] / one[name]['seconds']:.2f}×" if threads != "1" and name in one else ""
            vs_bases = "".join(f"{row['seconds'] / base['seconds']:.2f}× | " for base in bases.values())
            lines.append(f"| {name} | {row['epoch_seconds']:.1f} | {vs_one} | {vs_bases}`{row['weights']}` |")
        for label, base in bases.items():
            lines.append(f"| {label} ({args.baseline}) | {base['epoch_seconds']:.1f} | | "
                         + "| " * len(bases) + f"`{base['weights']}` |")
        lines.append("")
    lines += avx2_cpu_table(result, args)
    write_text(args.out / "kernels.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
