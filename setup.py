"""Build script for the optional C extension; the metadata lives in pyproject.toml.

``sknitro._fused`` (the compiled integer kernels of the CPU training step) is optional: where
no C compiler (or no Cython, which writes its Python side from ``_fused.pyx``; pip installs it
for the build) is available the build goes on without it and the engine uses its NumPy path,
which gives bit-identical results, only slower. The kernels run on the OpenMP threads the
user allows (``OMP_NUM_THREADS``, threadpoolctl); a compiler without OpenMP builds them
single-threaded.
"""

import os
import subprocess
import sys
import tempfile

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # a build without pip's isolation on a machine without Cython
    cythonize = None

SOURCES = ["sknitro/_fused.pyx", "sknitro/_passes.c", "sknitro/_portable.c", "sknitro/_pairs.c", "sknitro/_avx2.c", "sknitro/_vnni.c"]
HEADERS = ["sknitro/_rules.h", "sknitro/_portable.h", "sknitro/_head_loop.h", "sknitro/_passes.h",
           "sknitro/_pairs.h"]


def openmp_flags() -> list:
    """``["-fopenmp"]`` when the C compiler builds and links an OpenMP program, else ``[]``."""
    compiler = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "omp.c")
        with open(source, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            done = subprocess.run([compiler, "-fopenmp", source, "-o", os.path.join(folder, "omp")],
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return []
    if done.returncode != 0:
        print("sknitro: the C compiler has no OpenMP; the kernels run on one thread", file=sys.stderr)
        return []
    return ["-fopenmp"]


OPENMP = openmp_flags()

EXTENSION = Extension("sknitro._fused", SOURCES, depends=HEADERS, optional=True,
                      extra_compile_args=["-O3", "-fno-trapping-math", *OPENMP], extra_link_args=OPENMP)
if cythonize is None:
    print("sknitro: Cython is not installed; building without the compiled kernels", file=sys.stderr)

setup(ext_modules=cythonize([EXTENSION]) if cythonize is not None else [])
