#!/usr/bin/env bash
# gsplat 1.4.0's CUDA kernels built on the development machine (no GPU needed: nvcc 13.0 is
# there), for the lent GPU machine (Python 3.12, torch 2.11.0+cu130, an H200: sm_90), so that a
# device session does not spend its minutes in nvcc. Writes .gpu/gsplat_cuda.so, which
# scripts/gpu_check.sh loads (and falls back to compiling if it cannot).
#
#   bash scripts/build_gsplat_kernels.sh        # about 30 minutes on 2 cores; the GPU machine's 16 take minutes
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-/tmp/gsplat-build-venv}
build=${TORCH_EXTENSIONS_DIR:-/tmp/gsplat-build}
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON312:-$HOME/.pyenv/versions/3.12.1/bin/python}" -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.11.0 gsplat==1.4.0 ninja numpy jaxtyping rich
fi
TORCH_EXTENSIONS_DIR=$build TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-2} \
    CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} "$venv/bin/python" -c "from gsplat.cuda._backend import _C; assert _C is not None"
mkdir -p "$repo/.gpu"
cp "$build/gsplat_cuda/gsplat_cuda.so" "$repo/.gpu/gsplat_cuda.so"
echo "wrote $repo/.gpu/gsplat_cuda.so ($(du -h "$repo/.gpu/gsplat_cuda.so" | cut -f1))"
