#!/usr/bin/env bash
# GPU figures of kiln on a machine with NVIDIA GPUs and PyTorch 2.11 (CUDA) installed:
#   - LoRA and full fine-tuning training-step tokens/s, MFU and peak memory of LLaMA shapes of 1B and
#     8B parameters (random weights, bf16 weights and autocast, AdamW), one GPU (bench_train);
#   - NCCL all-reduce bus bandwidth over every GPU of the machine (bench_dist_allreduce nccl), when
#     it has two or more.
# Usage: bash bench/gpu/run.sh [BUILD_DIR]
#   BUILD_DIR holds kiln's binaries (bench/bench_train, bench/bench_dist_allreduce); without one, kiln
#   is built into build-gpu/ against the torch of `python3` (KILN_PYTHON to name another).
# Environment: KILN_GPU_SHAPES (default "llama3-1b llama3-8b"), KILN_GPU_MODES ("lora full"),
# KILN_GPU_BATCH (4), KILN_GPU_SEQ (2048), KILN_GPU_STEPS (5).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-}
if [[ -z $build ]]; then
  build=$root/build-gpu
  py=${KILN_PYTHON:-python3}
  torch_dir=$("$py" -c 'import torch, os; print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))')
  echo "# building kiln into $build against $torch_dir"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON -DKILN_TESTS=OFF \
    -DKILN_TORCH_DIR="$torch_dir" >/dev/null
  cmake --build "$build" -j "$(nproc)" --target kiln bench_train bench_dist_allreduce >/dev/null
fi
bench_train=$build/bench/bench_train
allreduce=$build/bench/bench_dist_allreduce
[[ -x $bench_train ]] || { echo "run.sh: $bench_train not found" >&2; exit 1; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
batch=${KILN_GPU_BATCH:-4} seq=${KILN_GPU_SEQ:-2048} steps=${KILN_GPU_STEPS:-5}
for shape in ${KILN_GPU_SHAPES:-llama3-1b llama3-8b}; do
  for mode in ${KILN_GPU_MODES:-lora full}; do
    # Full fine-tuning of 8B keeps its activations in memory only with checkpointing.
    ckpt=()
    [[ $mode == full && $shape != *1b ]] && ckpt=(--checkpointing)
    "$bench_train" --shape "$shape" --mode "$mode" --batch "$batch" --seq "$seq" --steps "$steps" "${ckpt[@]}" \
      || echo "bench_train --shape $shape --mode $mode failed (exit $?)"
  done
done

if (( ngpu >= 2 )); then
  mpirun --allow-run-as-root -np "$ngpu" --bind-to none "$allreduce" nccl
else
  echo "# NCCL all-reduce bus bandwidth: $ngpu GPU here; it needs 2 or more (one rank per GPU)"
fi
