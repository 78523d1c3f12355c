"""The kernels on a CPU with AVX2 and no AVX-512: an AMD EPYC of the Zen 2 generation, the
project's other kind of machine, emulated by QEMU's user mode (``qemu-x86_64 -cpu EPYC-Rome``).

Python, NumPy's OpenBLAS and the extension all see that CPU's CPUID there, so the kernel
selection, the AVX2 pair products, the x86-64-v3 builds of the portable loops and OpenBLAS's
AVX2 kernels run as they would on it. The kernel tests run there under pytest: every kernel
path against the reference's weights, any number of threads, the pair kernels and the C passes
against NumPy, the compiled kernels' argument checks (with the tests of an instruction set the
CPU lacks, which a VNNI host skips), and the golden traces of the published code. Speed under
emulation means nothing: ``benchmarks/bench_kernels.py --avx2-cpu-build`` emulates that CPU's
speed instead.
``.ci/run`` installs QEMU's user mode (``qemu-user``).

QEMU's user mode has crashed once on these tests in CI (SIGSEGV in a CNN training test on two
OpenMP threads) and never again in repeated runs, nor has any run on real hardware: a run that
dies of a signal is repeated once, with a warning that carries the crash's Python traceback; a
second crash, or any failing test, fails.
"""

import json
import os
import warnings
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sknitro.nn import kernels

ROOT = Path(__file__).parent.parent
QEMU = shutil.which("qemu-x86_64")
AVX2_ONLY_CPU = "EPYC-Rome"  # Zen 2: AVX2, FMA, no AVX-512
KERNEL_TESTS = ["tests/test_kernels.py", "tests/test_pairs.py", "tests/test_fused.py",
                "tests/test_kernel_arguments.py", "tests/test_reference.py"]

pytestmark = [
    pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86-64 CPU on an x86-64 host"),
    pytest.mark.skipif(QEMU is None, reason="needs qemu-x86_64 (apt-get install qemu-user; CI installs it)"),
    pytest.mark.skipif(kernels._compiled is None, reason="sknitro._fused is not built"),
]


def _on_the_avx2_cpu(*arguments, timeout):
    """``python *arguments`` on the emulated CPU, from the repository root."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([QEMU, "-cpu", AVX2_ONLY_CPU, sys.executable, *arguments], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_an_avx2_only_cpu_runs_the_avx2_kernels():
    probe = ("import json; from sknitro import _fused; from sknitro.nn import kernels; "
             "print(json.dumps([kernels.AVAILABLE, _fused.pair_isas(), kernels.select().name]))")
    run = _on_the_avx2_cpu("-c", probe, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    available, pair_isas, selected = json.loads(run.stdout.strip().splitlines()[-1])
    assert available == ["numpy", "c", "avx2"] and pair_isas == ["avx2"] and selected == "avx2"


def _crash_report(run):
    """What a run that died of a signal left: the end of its test output and the fault's
    Python traceback (pytest's faulthandler)."""
    fault = run.stderr.find("Fatal Python error")
    return f"signal {-run.returncode}; {run.stdout[-1500:]}\n{run.stderr[fault:fault + 4000]}"


def test_the_kernel_tests_pass_on_an_avx2_only_cpu():
    arguments = ("-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q", *KERNEL_TESTS)
    run = _on_the_avx2_cpu(*arguments, timeout=1200)
    if run.returncode < 0:  # the emulator (or the code) died of a signal: once more, then it counts
        warnings.warn(f"the emulated AVX2-only CPU crashed; running again. {_crash_report(run)}", UserWarning)
        run = _on_the_avx2_cpu(*arguments, timeout=1200)
        assert run.returncode >= 0, _crash_report(run)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
