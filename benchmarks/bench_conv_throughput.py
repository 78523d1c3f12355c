"""Benchmark: throughput of sknitro's integer convolution against the float64 GEMM roofline
and a float32 im2col convolution in NumPy, measured in the same run.

    python benchmarks/bench_conv_throughput.py [--batch 64] [--channels 128] [--size 16]

The job is one VGG-like layer: forward (im2col + GEMM) and weight gradient, 3×3 kernels,
stride 1, padding 1. FLOPs = 2 GEMMs of 2·(B·H·W)·(C·9)·F each. Results go to
benchmarks/results/conv_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from sknitro.nn.conv import IntegerConv2d


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def float_im2col(x: np.ndarray) -> np.ndarray:
    """The same channels-last im2col as sknitro's, in float32 (a fair float peer)."""
    n, c, h, w = x.shape
    padded = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    s0, s1, s2, s3 = padded.strides
    windows = np.lib.stride_tricks.as_strided(padded, (n, h, w, 3, 3, c), (s0, s1, s2, s1, s2, s3))
    return windows.reshape(n * h * w, 9 * c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    b, c, s = args.batch, args.channels, args.size
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, size=(b, c, s, s)).astype(np.int8)
    conv = IntegerConv2d(c, c, 64, rng)
    conv.weight[...] *= 100  # trained-like magnitudes: |W| up to 6400
    conv.refresh_bounds()
    delta = rng.integers(-3000, 3000, size=(b, c, s, s)).astype(np.int32)

    def integer_job():
        z, patches = conv.forward(x)
        conv.weight_grad(delta, patches)

    xf, wf, df = x.astype(np.float32), conv.weight.astype(np.float32), delta.astype(np.float32)

    def float32_job():
        patches = float_im2col(xf)
        patches @ wf.transpose(0, 2, 3, 1).reshape(c, -1).T
        df.transpose(0, 2, 3, 1).reshape(-1, c).T @ patches

    rows, k = b * s * s, c * 9
    a64, b64 = rng.standard_normal((rows, k)), rng.standard_normal((k, c))
    g64 = rng.standard_normal((c, rows))
    flops = 2 * (2 * rows * k * c)
    roofline = flops / best_time(lambda: (a64 @ b64, g64 @ a64), args.repeats)
    t_int = best_time(integer_job, args.repeats)
    t_f32 = best_time(float32_job, args.repeats)
    result = {
        "job": f"conv3x3 {c}->{c} on {s}x{s}, batch {b}: forward + weight gradient",
        "flops": flops, "float64_gemm_gflops": roofline / 1e9,
        "sknitro_seconds": t_int, "sknitro_gflops": flops / t_int / 1e9,
        "roofline_fraction": flops / t_int / roofline,
        "float32_im2col_seconds": t_f32, "ratio_sknitro_over_float32": t_int / t_f32,
        "numpy": np.__version__, "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conv_throughput.json").write_text(json.dumps(result, indent=2))
    table = "\n".join([
        f"# Conv throughput: {result['job']}", "",
        "| measure | value |", "|---|---|",
        f"| float64 GEMM roofline (same GEMM shapes) | {result['float64_gemm_gflops']:.1f} GFLOP/s |",
        f"| sknitro integer conv (exact, im2col + float64-exact GEMM) | {t_int * 1e3:.1f} ms, "
        f"{result['sknitro_gflops']:.1f} GFLOP/s |",
        f"| fraction of the roofline | {100 * result['roofline_fraction']:.1f} % |",
        f"| float32 im2col conv in NumPy | {t_f32 * 1e3:.1f} ms |",
        f"| ratio sknitro / float32 | {result['ratio_sknitro_over_float32']:.2f} |", ""])
    (out / "conv_throughput.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
