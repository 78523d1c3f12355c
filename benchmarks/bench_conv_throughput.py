"""Benchmark: one integer conv layer's training work on each kernel implementation, against
the float64 GEMM roofline and a float32 im2col convolution in NumPy, measured in one run.

    python benchmarks/bench_conv_throughput.py [--batch 64] [--channels 128] [--size 16] [--threads 1]

The job is one VGG-like layer: the scaled, activated forward (im2col, product, NITRO
scaling, activation) and the weight gradient fused with the IntegerSGD update, 3×3
kernels, stride 1, padding 1, trained-like weights (|W| up to 6400) and gradients. FLOPs
(float64-equivalent) = 2 GEMMs of 2·(B·H·W)·(C·9)·F each; the roofline is float64 BLAS on
the same GEMM shapes. Results go to benchmarks/results/conv_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import sknitro
from sknitro.nn import kernels
from sknitro.nn.conv import IntegerConv2d
from sknitro.nn.layers import NitroReLU, scale_factor
from sknitro.nn.optim import IntegerSGD

from _common import machine_info, machine_line


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
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    b, c, s = args.batch, args.channels, args.size
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, size=(b, c, s, s)).astype(np.int8)
    conv = IntegerConv2d(c, c, 64, rng)
    conv.weight *= 100  # trained-like magnitudes: |W| up to 6400
    activation, scale = NitroReLU(4), scale_factor(8, 9 * c)
    delta = rng.integers(-100, 100, size=(b * s * s, c)).astype(np.int32)  # rows: one per position
    sgd = IntegerSGD(10**6)  # a small step: the weights keep their magnitude over the repeats

    def integer_job():
        _, _, patches = conv.scaled_activated_forward(x, scale, activation)
        sgd.step(conv.linear, delta, patches, amp=1, decay_inv=0)

    xf, wf, df = x.astype(np.float32), conv.weight.astype(np.float32), delta.astype(np.float32)

    def float32_job():
        patches = float_im2col(xf)
        patches @ wf.transpose(0, 2, 3, 1).reshape(c, -1).T
        df.T @ patches

    rows, k = b * s * s, c * 9
    a64, b64 = rng.standard_normal((rows, k)), rng.standard_normal((k, c))
    g64 = rng.standard_normal((c, rows))
    flops = 2 * (2 * rows * k * c)
    with threadpool_limits(args.threads):
        roofline = flops / best_time(lambda: (a64 @ b64, g64 @ a64), args.repeats)
        t_f32 = best_time(float32_job, args.repeats)
        seconds = {}
        for name in kernels.AVAILABLE:
            with sknitro.config_context(kernels=name):
                seconds[name] = best_time(integer_job, args.repeats)
    result = {
        "job": f"conv3x3 {c}->{c} on {s}x{s}, batch {b}: forward + weight gradient and update",
        "threads": args.threads, "flops": flops, "float64_gemm_gflops": roofline / 1e9,
        "float32_im2col_seconds": t_f32,
        "kernels": {name: {"seconds": t, "gflops": flops / t / 1e9, "roofline_ratio": flops / t / roofline}
                    for name, t in seconds.items()},
        "machine": machine_info(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conv_throughput.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Conv throughput: {result['job']}, {args.threads} thread(s)", "",
             machine_line(result["machine"]), "",
             f"float64 GEMM roofline (same GEMM shapes): {roofline / 1e9:.1f} GFLOP/s; "
             f"float32 im2col conv in NumPy: {t_f32 * 1e3:.1f} ms", "",
             "| kernels | time | float64-equivalent GFLOP/s | × roofline |", "|---|---|---|---|"]
    for name, row in result["kernels"].items():
        lines.append(f"| {name} | {row['seconds'] * 1e3:.1f} ms | {row['gflops']:.1f} | {row['roofline_ratio']:.2f} |")
    table = "\n".join(lines) + "\n"
    (out / "conv_throughput.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
