"""Benchmark: training speed with ``device="cuda"`` beside the same machine's CPU, in one run.

    python benchmarks/bench_gpu.py [--mlp-epochs 3] [--cnn-samples 4000] [--cnn-epochs 3] [--out DIR]

The jobs of ``bench_kernels.py``, each on the GPU and on this machine's CPU (the fastest
kernels it runs; one thread, and every usable thread):

- the Fashion-MNIST MLP 784-200-100-50-10 (the published hyperparameters), seconds per epoch
  on the 60,000 images (median of epochs 2..``--mlp-epochs``);
- the compact CNN (conv32-pool-conv64-pool-dense1024), seconds per epoch on ``--cnn-samples``
  images (median of epochs 2..``--cnn-epochs``), scaled to 60,000.

Every row of a job must train to the same weights, which the table shows by a hash.
``benchmarks/gpu_check.sh`` runs this on a GPU machine after ``tests/test_gpu.py``.
Results go to ``gpu.{json,md}`` in ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def gpu_info() -> dict:
    import cupy

    properties = cupy.cuda.runtime.getDeviceProperties(0)
    name = properties["name"]
    return {"gpu": name.decode() if isinstance(name, bytes) else str(name),
            "gpu_memory_gib": round(properties["totalGlobalMem"] / 2**30, 1), "cupy": cupy.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}


def table(machine: dict, rows: dict, titles: dict) -> str:
    """The Markdown page of the rows measured so far (each job's rows against its GPU row)."""
    from _common import machine_line

    lines = ["# Training speed on a GPU, beside the same machine's CPU", "", machine_line(machine), "",
             f"GPU: {machine['gpu']} ({machine['gpu_memory_gib']} GiB), CuPy {machine['cupy']}, "
             f"CUDA runtime {machine['cuda_runtime']}", "",
             "`python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:]) + "`", "",
             "| job | device | s / epoch | vs GPU | weights |", "|---|---|---|---|---|"]
    for job, job_rows in rows.items():
        gpu = job_rows.get("cuda", {}).get("epoch_seconds")
        for device, row in job_rows.items():
            seconds = row["epoch_seconds"]
            versus = f"{seconds / gpu:.2f}x" if gpu else ""
            lines.append(f"| {titles[job]} | {device} | {seconds:.2f} | {versus} | `{row['weights']}` |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlp-epochs", type=int, default=3)
    parser.add_argument("--cnn-samples", type=int, default=4000)
    parser.add_argument("--cnn-epochs", type=int, default=3, help="epochs per CNN job: the first warms up")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    from _common import machine_info, write_json, write_text
    from bench_kernels import EPOCH_IMAGES, time_cnn, time_mlp

    from sknitro.nn.kernels import select

    machine = {**machine_info(), **gpu_info()}
    cpu_kernels, all_threads = select().name, len(os.sched_getaffinity(0))
    titles = {"mlp": f"Fashion-MNIST MLP, s / epoch (median of epochs 2-{args.mlp_epochs})",
              "compact": f"compact CNN, s / 60k epoch ({args.cnn_samples} images, median of epochs "
                         f"2-{args.cnn_epochs}, x{EPOCH_IMAGES // args.cnn_samples})"}
    jobs = [("mlp", "cuda", lambda: time_mlp(args.mlp_epochs, cpu_kernels, device="cuda")),
            ("mlp", f"cpu {cpu_kernels}, 1 thread", lambda: time_mlp(args.mlp_epochs, cpu_kernels)),
            ("compact", "cuda", lambda: time_cnn("compact", args.cnn_samples, 1, None, args.cnn_epochs,
                                                 device="cuda"))]
    jobs += [("compact", f"cpu {cpu_kernels}, {threads} thread(s)",
              lambda threads=threads: time_cnn("compact", args.cnn_samples, threads, cpu_kernels,
                                               args.cnn_epochs))
             for threads in (1, all_threads)]
    rows: dict[str, dict] = {"mlp": {}, "compact": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for job, device, measure in jobs:  # the results so far are written after each row
        rows[job][device] = measure()
        print(f"{job}, {device}: {rows[job][device]}", flush=True)
        write_json(args.out / "gpu.json", {"machine": machine, "rows": rows})
        write_text(args.out / "gpu.md", table(machine, rows, titles))
    print(table(machine, rows, titles))


if __name__ == "__main__":
    main()
