#!/usr/bin/env bash
# Wheels for installing spars-ns on a GPU node without internet.
#
#   bash scripts/offline_wheels.sh [FOLDER] [--with-processing]
#
# Run it on any machine that reaches PyPI, from a clone of this repository. It downloads into
# FOLDER (default spars-wheels/) the Python 3.12 x86_64 wheels that spars-ns needs beyond what
# such a node already has (NVIDIA driver, CUDA with nvcc, ninja, Python 3.12 with PyTorch,
# torchvision, numpy, scipy, scikit-image, opencv, matplotlib, rich, pillow, pyyaml,
# tensorboard, torchmetrics, jaxtyping, imageio, h5py, msgpack), builds spars-ns's own wheel
# beside them, and prints the install line to run on the node. About 30 MB.
#
# The set is what `ns-train spars3r`, `ns-eval`, `ns-viewer` and `spars-ns export-splat` import,
# found by installing exactly these with --no-deps into such an environment (Python 3.12,
# torch 2.11) and running each command. Left out on purpose:
# - open3d (400 MB) and pymeshlab (106 MB), which nerfstudio lists but only its meshing and
#   point-cloud exporters import; `ns-export` imports them before it runs, so export splats
#   with `spars-ns export-splat` on the node (same PLY as `ns-export gaussian-splat`);
# - pycolmap (38 MB), which only processing photos needs: process on any CPU machine
#   (`spars-ns process`) and copy the scene folder over, or pass --with-processing;
# - nerfstudio's other dependencies (wandb, comet_ml, jupyterlab, nuscenes-devkit, trimesh,
#   mediapy, ...), which nothing above imports.
# fpsample is 0.3.3: 1.0.2 (what pip picks for Python 3.11) has no Python 3.12 wheel, and
# nerfstudio's full-image datamanager uses only its bucket_fps_kdline_sampling, which 0.3.3 has.
#
# gsplat 1.4.0 compiles its CUDA kernels on first use (a few minutes of nvcc on one GPU
# architecture; on all of them, much longer). Limit it to the node's GPU and keep the build:
#   export TORCH_CUDA_ARCH_LIST="9.0"                  # e.g. 9.0 for H100/H200, 8.6 for RTX 30xx
#   export TORCH_EXTENSIONS_DIR=$HOME/.cache/torch_extensions   # the default; point it at shared storage to reuse
# The first `ns-train spars3r` then builds into TORCH_EXTENSIONS_DIR; later runs load the build.
set -euo pipefail

folder=spars-wheels
with_processing=0
for arg in "$@"; do
    case "$arg" in
        --with-processing) with_processing=1 ;;
        -*) echo "unknown option $arg" >&2; exit 2 ;;
        *) folder=$arg ;;
    esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)

wheels=(
    nerfstudio==1.1.5 gsplat==1.4.0 viser==0.2.7 tyro==1.0.17 typeguard==4.6.1 docstring_parser==0.18.0
    kornia==0.9.0 kornia_rs==0.2.0 roma==1.8.0 plyfile==1.1.3 pytorch-msssim==1.0.0 nerfacc==0.5.2
    websockets==17.4 msgspec==0.23.0 fpsample==0.3.3 rawpy==0.28.0 tensorly==0.10.0 pathos==0.3.5
    ppft==1.7.8 dill==0.4.1 splines==0.3.0 pyquaternion==0.9.9 appdirs==1.4.4
)
if [ "$with_processing" = 1 ]; then
    wheels+=(pycolmap==4.2.1)
fi

mkdir -p "$folder"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$folder" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
    "${wheels[@]}"
python3 -m pip wheel --quiet --no-deps --wheel-dir "$folder" "$repo"

echo "$(ls "$folder" | wc -l) wheels, $(du -sh "$folder" | cut -f1) in $folder. Copy it to the node and run there:"
echo "  python3 -m pip install --no-index --no-deps $folder/*.whl"
