#!/usr/bin/env bash
# The GPU checks, in one run on a machine with CuPy and a CUDA GPU, from the repository root:
#
#   bash benchmarks/gpu_check.sh --prepare   # where pip reaches PyPI and Fashion-MNIST is installed
#   bash benchmarks/gpu_check.sh OUT         # on the GPU machine, with .gpu/ copied there
#
# A GPU machine may reach no package index and lack the test extras. --prepare puts in .gpu/
# (git-ignored, about 33 MB) what the run needs beyond NumPy, CuPy, scikit-learn and pytest:
# pure-Python wheels (Cython, to build the CPU kernels that the CPU rows time; skops; tqdm) and
# the Fashion-MNIST files. The run then
#   1. records the GPU and the library versions,
#   2. builds sknitro's CPU kernels in place,
#   3. runs tests/test_gpu.py on the GPU (bit-identity with the CPU, saving and loading, export),
#   4. times the Fashion-MNIST MLP and compact-CNN epochs on the GPU and on the CPU
#      (benchmarks/bench_gpu.py),
# each step under a time limit (about 9 minutes in all, within one call of the device machine),
# its output in OUT (gpu_check.log, test_gpu.log, gpu.{json,md}: the rows measured so far).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu

if [ "${1:-}" = "--prepare" ]; then
    set -e
    python -m pip download -q --no-deps --only-binary=:all: --platform any -d "$STAGE/wheels" \
        Cython skops prettytable wcwidth packaging tqdm
    mkdir -p "$STAGE/fashion-mnist"
    cp "${SKNITRO_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"/*-ubyte.gz "$STAGE/fashion-mnist/"
    du -sh "$STAGE"
    exit 0
fi

OUT=${1:-gpu-check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
step() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }

step "machine"
{ nvidia-smi -L; nproc; grep -m1 "model name" /proc/cpuinfo
  python -c "import sys, numpy, cupy, sklearn; print(sys.version); print('numpy', numpy.__version__,
'cupy', cupy.__version__, 'scikit-learn', sklearn.__version__)"; } 2>&1 | tee -a "$LOG"

step "wheels from $STAGE/wheels"
python -m pip install -q --no-index --no-deps --target "$STAGE/site" "$STAGE"/wheels/*.whl 2>&1 | tee -a "$LOG"
export PYTHONPATH="$PWD:$PWD/$STAGE/site"
export SKNITRO_FASHION_MNIST="$PWD/$STAGE/fashion-mnist"

step "build the CPU kernels"
timeout 150 python setup.py -q build_ext --inplace 2>&1 | tail -5 | tee -a "$LOG"
python -c "from sknitro.nn.kernels import AVAILABLE; print('CPU kernels:', AVAILABLE)" 2>&1 | tee -a "$LOG"

step "tests/test_gpu.py"
timeout 180 python -m pytest -o addopts="" -ra -q -p no:cacheprovider tests/test_gpu.py 2>&1 \
    | tee "$OUT/test_gpu.log" | tail -15 | tee -a "$LOG"

step "benchmarks/bench_gpu.py"
timeout 220 python benchmarks/bench_gpu.py --out "$OUT" 2>&1 | tee -a "$LOG" | tail -12
step "done"
