"""The extension's portable C (the rules of _rules.h, the loops of _portable.c, the pair forms
of _pairs.c) builds and is exact on another architecture: tests/c/test_portable.c holds every
kernel to naive int64 arithmetic, compiled for this machine (with and without OpenMP, the
pair products included where the CPU runs them; and with the portable loops built for
x86-64-v3 only, as an AVX2 CPU runs them) and cross-compiled for aarch64, run under QEMU. ``.ci/run`` installs the cross toolchain (``gcc-aarch64-linux-gnu``, ``qemu-user``)."""

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from sknitro.nn.kernels import AVAILABLE

ROOT = Path(__file__).parent.parent
SOURCES = [ROOT / "tests" / "c" / "test_portable.c"] + [ROOT / "sknitro" / f"_{name}.c"
                                                        for name in ("portable", "pairs", "avx2", "vnni")]
FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", f"-I{ROOT / 'sknitro'}"]


def _build_and_run(compiler, flags, tmp_path, runner=(), env=None):
    program = tmp_path / "test_portable"
    build = subprocess.run([compiler, *FLAGS, *flags, *map(str, SOURCES), "-o", str(program)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([*runner, str(program)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].startswith("ok: ")
    return run.stdout


@pytest.fixture(scope="module")
def native_compiler():
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    return compiler


@pytest.mark.parametrize("openmp", [False, True])
def test_portable_kernels_on_this_machine(native_compiler, openmp, tmp_path):
    flags = ["-fopenmp"] if openmp else []
    out = _build_and_run(native_compiler, flags, tmp_path, env={"OMP_NUM_THREADS": "2"})
    for isa in ("avx2", "vnni"):  # the pair products the engine runs here are checked in C too
        if isa in AVAILABLE and platform.machine() == "x86_64":
            assert f"{isa} pair products: checked" in out


@pytest.mark.skipif(platform.machine() != "x86_64" or "avx2" not in AVAILABLE, reason="needs an x86-64 CPU with AVX2")
def test_portable_kernels_built_as_an_avx2_cpu_runs_them(native_compiler, tmp_path):
    # the loops for x86-64-v3 only (SKNITRO_PORTABLE_ARCH), heads in 8 lanes: on a CPU with
    # AVX-512 the loader would pick its own builds, and these would go untested
    out = _build_and_run(native_compiler, ["-DSKNITRO_PORTABLE_ARCH=x86-64-v3"], tmp_path)
    assert "avx2 pair products: checked" in out


def test_portable_kernels_on_aarch64_under_qemu(tmp_path):
    missing = [tool for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install gcc-aarch64-linux-gnu qemu-user)")
    out = _build_and_run("aarch64-linux-gnu-gcc", ["-static"], tmp_path, runner=["qemu-aarch64"])
    assert "avx2 pair products: not run by this CPU" in out  # x86 kernels build as stubs there
