"""Build script for the optional C extension; the metadata lives in pyproject.toml.

``sknitro._fused`` (fused integer kernels of the CPU training step) is optional: where no C
compiler is available the build goes on without it and the engine uses its NumPy path,
which gives bit-identical results, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("sknitro._fused", ["sknitro/_fused.c", "sknitro/_vnni.c"], depends=["sknitro/_vnni.h"],
                  optional=True,
                  extra_compile_args=["-O3", "-fno-trapping-math"]),
    ],
)
