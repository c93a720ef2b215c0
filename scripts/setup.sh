#!/usr/bin/env bash
# Sets up a CPU development environment from nothing: .venv with torch (CPU),
# torch-cluster (compiled from source, 15-22 min on 2 cores, unless pip's wheel cache
# holds a build from an earlier setup), and hipnn_pyg in editable mode with its test tools
# (and triton, for the Triton kernels' tests in its interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pinned: where a local CPU wheel of 2.13.0 is on the index (this project's CI) pip takes it;
# from PyPI on Linux the same pin is the CUDA build. Install another torch first to choose.
python -m pip install -q torch==2.13.0 ninja wheel setuptools numpy scipy
if ! python -c "import torch_cluster" 2>/dev/null; then
  # pip reuses a wheel it built before (its wheel cache); only without one does it compile.
  tag=$(python -c 'import sys; print(f"-cp{sys.version_info[0]}{sys.version_info[1]}-")')
  cached=$(python -m pip cache list torch_cluster-1.6.3 --format=abspath 2>/dev/null || true)
  if [[ "$cached" == *"$tag"* ]]; then
    echo "installing torch-cluster 1.6.3 from pip's cached wheel..."
  else
    echo "compiling torch-cluster 1.6.3 from source (15-22 min on 2 cores; pip caches the wheel)..."
  fi
  MAX_JOBS=${MAX_JOBS:-2} python -m pip install -q --no-build-isolation torch-cluster==1.6.3
fi
# gpu: triton, whose interpreter runs the Triton kernels' tests on the CPU.
python -m pip install -q -c scripts/constraints-cpu.txt --no-build-isolation -e '.[test,label,md,gpu]'
python -c "import hipnn_pyg, torch, torch_cluster; print('hipnn_pyg', hipnn_pyg.__version__, 'torch', torch.__version__)"
