#!/usr/bin/env bash
# The GPU checks of #14: the GPU MSM against the CPU on every differential test, MSM at 2^16..2^22
# and whole proofs with the CPU and the GPU backend, written to a report.
#
#   bash scripts/gpu-check.sh build   # where cargo, crates and nvcc are (the x86-64 dev machine):
#                                     # release test and bench executables with the `cuda` feature,
#                                     # stripped, into .gpu-bin/ (git-ignored; carry it)
#   bash scripts/gpu-check.sh run     # on the GPU machine (no network, no cargo needed): runs them,
#                                     # writes $OUT/gpu-check.md (default benchmarks/results/)
#   bash scripts/gpu-check.sh         # both, on a GPU machine that can build
#
# nvcc: CUDA >= 11.4 (Debian: enable the non-free component, apt-get install nvidia-cuda-toolkit;
# with gcc 12 and CUDA 11.8 also export NVCC_PREPEND_FLAGS=-allow-unsupported-compiler).
# VERIML_CUDA_ARCH picks the GPU architectures (default 90: H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=.gpu-bin
mode=${1:-all}

build() {
  command -v nvcc >/dev/null || { echo "nvcc is not on PATH (see the comment at the top)" >&2; exit 2; }
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veriml-target}"
  export VERIML_CUDA_ARCH="${VERIML_CUDA_ARCH:-90}"
  mkdir -p "$BIN"
  local exes
  exes=$( (cargo test --release --no-run -p veriml-prover --features cuda --test gpu --test msm \
             --message-format=json; \
           cargo bench --no-run -p veriml-prover --features cuda --bench gpu --message-format=json) |
    python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("gpu", "msm"):
        kind = "bench" if "bench" in m["target"]["kind"] else "test"
        print(m["target"]["name"] + "-" + kind, m["executable"])')
  rm -f "$BIN"/*
  while read -r name exe; do
    cp "$exe" "$BIN/$name"
    strip "$BIN/$name"
    gzip -9 "$BIN/$name" # the three fit the device tool's 64 MiB carry compressed (~30 MB)
  done <<<"$exes"
  ls -la "$BIN"
  du -sh "$BIN"
}

run() {
  local out_dir=${OUT:-benchmarks/results}
  mkdir -p "$out_dir"
  local report=$out_dir/gpu-check.md
  export VERIML_REQUIRE_GPU=1 VERIML_ROOT=$ROOT
  for z in "$BIN"/*.gz; do
    [ -e "$z" ] && gunzip -f "$z" && chmod +x "${z%.gz}"
  done
  {
    echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "- device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not found')"
    echo "- CPU: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
    echo
    echo "## Differential tests (GPU against the definition and the CPU; CPU backends against each other)"
    echo
  } >"$report"
  local status=0
  for t in gpu-test msm-test; do
    if ! "$BIN/$t" --test-threads 1 2>&1 | tee "$out_dir/$t.log"; then status=1; fi
    grep -E "^test |test result|device:" "$out_dir/$t.log" | sed 's/^/    /' >>"$report"
  done
  "$BIN/gpu-bench" --bench 2>&1 | tee "$out_dir/gpu-bench.log" || status=1
  {
    echo
    echo "## MSM (points resident on the device) and whole proofs, CPU against GPU (criterion)"
    echo
    grep -E "^(gpu msm|gpu prove)/|time:" "$out_dir/gpu-bench.log" | paste - - | sed 's/^/    /'
  } >>"$report"
  echo "report: $report"
  return $status
}

case $mode in
  build) build ;;
  run) run ;;
  all) build && run ;;
  *) echo "usage: $0 [build|run]" >&2; exit 2 ;;
esac
