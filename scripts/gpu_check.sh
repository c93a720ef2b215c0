#!/usr/bin/env bash
# The GPU check: every GPU figure in one file, in under 8 minutes on one GPU.
#   bash scripts/gpu_check.sh [output file]     (default docs/benchmarks/gpu_check.txt)
#   bash scripts/gpu_check.sh --dry-run [file]  checks that every step is wired (CPU)
# Steps: the CUDA tests (tests/test_devices.py and the kernel tests on cuda), bench_speed
# on cuda (E+F inference and force-training step against hippynn on the same GPU), the
# largest water box that fits for E+F (doubling until out of memory), and a 1-GPU
# trainer=gpu run of the quick main job. Without a GPU it runs dry and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-docs/benchmarks/gpu_check.txt}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  if [ "$DRY" = 0 ]; then echo "no GPU found: running dry (nothing is measured)"; fi
  DRY=1
fi
mkdir -p "$(dirname "$OUT")"
status=0
step() {  # step <name> <command...>: runs it, output to $OUT, records failure
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT"
  if ! timeout 480 "$@" >> "$OUT" 2>&1; then echo "   FAILED: $name" | tee -a "$OUT"; status=1; fi
}
{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
  [ "$DRY" = 1 ] && echo "DRY RUN: no GPU found, every step is checked for wiring only"
} > "$OUT"
if [ "$DRY" = 1 ]; then
  step "CUDA tests (collected)" "$PY" -m pytest -q --collect-only tests/test_devices.py \
    tests/nn/test_triton_kernels.py
  step "bench_speed --device cuda (arguments)" "$PY" scripts/bench_speed.py --help
  step "largest water box (one small box on CPU)" "$PY" scripts/bench_speed.py \
    --sections largest --device cpu --max-repeats 1
  step "trainer=gpu run (config)" "$PY" scripts/train.py experiment=rmd17_ethanol_quick \
    trainer=gpu --cfg job
else
  step "CUDA tests" "$PY" -m pytest -q tests/test_devices.py tests/nn/test_envsum.py \
    tests/nn/test_triton_kernels.py
  step "bench_speed --device cuda" "$PY" scripts/bench_speed.py --device cuda \
    --sections throughput --rounds 5
  step "largest water box" "$PY" scripts/bench_speed.py --device cuda --sections largest
  step "trainer=gpu run" "$PY" scripts/train.py experiment=rmd17_ethanol_quick \
    trainer=gpu trainer.max_epochs=5 hydra.run.dir=/tmp/hipnn_gpu_check_run
fi
echo "written to $OUT"
exit $status
