#!/usr/bin/env bash
# The GPU checks of #14, for a machine with an NVIDIA GPU and nvcc (the device tool's machine):
# builds with the `cuda` feature, runs the GPU differential tests on the device (a missing device
# fails them), benchmarks MSM CPU against GPU at 2^16..2^22 and whole proofs with --msm cpu/gpu,
# and writes everything to $OUT/gpu-check.md (default: benchmarks/results/gpu-check.md).
#
# Usage: bash scripts/gpu-check.sh            (VERIML_CUDA_ARCH=90 for H100/H200 only: faster build)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/gpu-check.md"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veriml-target}"
export VERIML_CUDA_ARCH="${VERIML_CUDA_ARCH:-80,90}"
export VERIML_REQUIRE_GPU=1
command -v nvcc >/dev/null || { echo "nvcc is not on PATH: install the CUDA toolkit" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo unknown)"
  echo "- nvcc: $(nvcc --version | grep release)"
  echo "- CPU: $(nproc) cores"
  echo
} >"$REPORT"

echo "== differential tests on the device"
cargo test --release -p veriml-prover --features cuda --test gpu --test msm 2>&1 | tee /tmp/gpu-tests.log
grep -E "^test |test result" /tmp/gpu-tests.log | sed 's/^/    /' >>"$REPORT"

echo "== MSM and whole proofs, CPU against GPU"
cargo bench -p veriml-prover --features cuda --bench gpu 2>&1 | tee /tmp/gpu-bench.log
{
  echo
  echo "## MSM and proofs (criterion medians)"
  echo
  grep -E "^(gpu msm|gpu prove)|time:" /tmp/gpu-bench.log | paste - - | sed 's/^/    /'
} >>"$REPORT"
echo "report: $REPORT"
