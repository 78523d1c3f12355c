"""Benchmark: training speed of each kernel implementation this CPU runs, in one run.

    python benchmarks/bench_kernels.py [--mlp-epochs 5] [--cnn-samples 6000] [--vgg-samples 512]
                                       [--baseline PATH [--baseline-without-vnni]]

Every row is one implementation (``config_context(kernels=...)``: numpy, c, avx2, vnni,
whichever the CPU runs), one thread unless stated:

- Fashion-MNIST MLP 784-200-100-50-10 (the published hyperparameters of paper_table.py's
  ``mlp-fashion``), seconds per epoch on the 60,000 images (median of epochs 2..N), against
  scikit-learn's ``MLPClassifier`` (adam, same sizes and batch) timed in the same run;
- the compact CNN (conv32-pool-conv64-pool-dense1024), one epoch on ``--cnn-samples`` images,
  scaled to 60,000, on one thread and on two;
- VGG8B (the published network), one epoch on ``--vgg-samples`` images, scaled to 60,000.

``--baseline PATH`` times the two CNN jobs again with another sknitro checkout (built, on
the same CPU: say the last release) in a child process, for a before/after ratio; both
must train to the same weights, which the table shows by a hash. ``--baseline-without-vnni``
times it once more with its VNNI products off, as it would run on a CPU without them.
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
            "vgg8b": dict(architecture="vgg8b", hidden_layer_sizes=(1024,))}
EPOCH_IMAGES = 60000


def weights_hash(model) -> str:
    return hashlib.sha1(b"".join(np.ascontiguousarray(w).tobytes() for w in model.weights_)).hexdigest()[:12]


def time_cnn(job: str, samples: int, threads: int, kernels: str | None) -> dict:
    """One epoch of a CNN job on the first ``samples`` training images; ``kernels`` None: the
    settings of the sknitro that is imported (a baseline may not know the setting)."""
    import contextlib

    from threadpoolctl import threadpool_limits

    import sknitro
    from sknitro.datasets import load_fashion_mnist

    X, y, _, _ = load_fashion_mnist(n_train=samples, n_test=1)
    context = sknitro.config_context(kernels=kernels) if kernels else contextlib.nullcontext()
    model = sknitro.NitroCNNClassifier(**CNN_JOBS[job], max_iter=1, early_stopping=False, random_state=0)
    with threadpool_limits(threads), context, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "epoch_seconds": seconds * EPOCH_IMAGES / samples, "weights": weights_hash(model)}


def time_mlp(epochs: int, kernels: str) -> dict:
    from threadpoolctl import threadpool_limits

    import sknitro
    from paper_table import CONFIGS, integer_params
    from sknitro.datasets import load_fashion_mnist

    X, y, _, _ = load_fashion_mnist()
    X = X.reshape(len(X), -1)
    model = sknitro.NitroMLPClassifier(**integer_params(CONFIGS["mlp-fashion"]), max_iter=epochs,
                                       early_stopping=False, random_state=0)
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


def baseline_cnn(path: Path, job: str, samples: int, threads: int, without_vnni: bool = False) -> dict:
    """``time_cnn`` with the sknitro of ``path``, in a child process; ``without_vnni``: with
    that sknitro's VNNI products off, as it runs on a CPU without AVX-512 VNNI (a sknitro
    whose VNNI kernels are switched by ``sknitro.nn.fused.VNNI``, like commit a817753)."""
    # The child starts in ``path``: with ``python -c``, the working directory comes first on
    # sys.path, and started from this checkout it would time this sknitro, not the baseline.
    switch = "import sknitro.nn.fused as fused; assert hasattr(fused, 'VNNI'); fused.VNNI = False; " \
        if without_vnni else ""
    code = (f"import json, sys; sys.path.insert(1, {str(Path(__file__).parent)!r}); import bench_kernels, sknitro; "
            f"{switch}print(json.dumps({{'module': sknitro.__file__, "
            f"**bench_kernels.time_cnn({job!r}, {samples}, {threads}, None)}}))")
    env = {**os.environ, "PYTHONPATH": str(path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=path, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(result["module"]).resolve().is_relative_to(path.resolve()):
        raise RuntimeError(f"the baseline child imported {result['module']}, not the sknitro of {path}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlp-epochs", type=int, default=5)
    parser.add_argument("--cnn-samples", type=int, default=6000)
    parser.add_argument("--vgg-samples", type=int, default=512)
    parser.add_argument("--baseline", type=Path, help="another sknitro checkout (built), timed on the CNN jobs")
    parser.add_argument("--baseline-without-vnni", action="store_true",
                        help="also time the baseline with its VNNI products off (as on an AVX2 CPU)")
    parser.add_argument("--skip-mlp", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    from _common import machine_info, machine_line, write_json, write_text

    from sknitro.nn.kernels import AVAILABLE

    machine = machine_info()
    result: dict = {"machine": machine, "kernels": list(AVAILABLE), "mlp": {}, "cnn": {}, "baseline": {},
                    "baseline_without_vnni": {}}
    if not args.skip_mlp:
        result["mlp_peer_epoch_seconds"] = time_peer(args.mlp_epochs)
        print(f"MLPClassifier: {result['mlp_peer_epoch_seconds']:.2f} s per epoch", flush=True)
        for name in AVAILABLE:
            result["mlp"][name] = time_mlp(args.mlp_epochs, name)
            print(f"MLP {name}: {result['mlp'][name]}", flush=True)
    jobs = [("compact", args.cnn_samples, 1), ("compact", args.cnn_samples, 2), ("vgg8b", args.vgg_samples, 1)]
    for job, samples, threads in jobs:
        key = f"{job}/{threads}"
        result["cnn"][key] = {name: time_cnn(job, samples, threads, name) for name in AVAILABLE}
        print(f"{key}: {result['cnn'][key]}", flush=True)
        if args.baseline and threads == 1:
            result["baseline"][key] = baseline_cnn(args.baseline, job, samples, threads)
            print(f"{key} baseline: {result['baseline'][key]}", flush=True)
            if args.baseline_without_vnni:
                result["baseline_without_vnni"][key] = baseline_cnn(args.baseline, job, samples, threads, True)
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
        samples = args.cnn_samples if job == "compact" else args.vgg_samples
        one = result["cnn"].get(f"{job}/1", {})
        bases = {"baseline": result["baseline"].get(key),
                 "baseline without its VNNI products": result["baseline_without_vnni"].get(key)}
        bases = {label: base for label, base in bases.items() if base}
        lines += [f"{job} CNN, {threads} thread(s): one epoch on {samples} images, scaled to 60,000", "",
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
    write_text(args.out / "kernels.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
