#!/usr/bin/env bash
# The CUDA backend's GPU acceptance checks in one run (docs/codegen-cuda.md, "Verifying on
# a GPU"): needs an NVIDIA GPU with its driver, nvcc, and Kiln installed (pip install -e
# ".[test]"; CUDA PyTorch too for the benchmark's peers).  Prints everything and keeps a
# copy in ${OUT:-gpu-acceptance}/.  Usage: bash bench/gpu_acceptance.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-acceptance}"
mkdir -p "$out"
step() { echo; echo "=== $1"; }
{
  step "device"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  nvcc --version | tail -1
  python -c "import runtime.cuda as c; print('kiln sees', c.device_count(), 'GPU(s)', c.why_no_device())"

  step "differential tests on the device (every op and gradient, samples, runtime, training, tf32)"
  python -m pytest -q -p no:cacheprovider -k device \
    tests/test_cuda_ops.py tests/test_cuda_runtime.py tests/test_cuda_samples.py \
    tests/test_cuda_training.py tests/test_cuda_tf32.py

  step "digits sample, 10 epochs on the GPU"
  python -m compiler.cli compile samples/mnist_mlp.py -o "$out/mlp_gpu" --target cuda --no-dump-ir &&
    python -m compiler.cli train "$out/mlp_gpu" --data digits --resize-images --epochs 10 --run-dir "$out/mlp_gpu/run" 2>/dev/null |
    grep -E "^epoch|^kiln"

  step "TF32 kernels compile to tensor-core instructions"
  python -m compiler.cli compile samples/mnist_mlp.py -o "$out/mlp_tf32" --target cuda --cuda-tf32 --no-dump-ir >/dev/null &&
    (cuobjdump -sass "$out/mlp_tf32/lib/model.so" 2>/dev/null | grep -c HMMA || echo "cuobjdump missing or no HMMA")

  step "train-step benchmark"
  if [ "${1:-}" = "--quick" ]; then
    python bench/gpu_train_step.py --repeats 50 --cases mlp:128,cnn:50
  else
    python bench/gpu_train_step.py --json "$out/bench.json"
  fi
} 2>&1 | tee "$out/report.txt"
