#!/usr/bin/env bash
# The GPU checks of one session, as one command on a lent GPU machine (the `device` tool).
#
# Prepare on the development machine first (CPU, a few minutes), into the ignored folder .gpu/:
#   bash scripts/offline_wheels.sh .gpu/wheels
#   python scripts/bench_nvs.py prepare --scene ../shared/data/fox --views 6 12 --output .gpu/scenes
#   python scripts/bench_nvs.py prepare --scene ../shared/data/strecha/fountain-P11 --views 5 --test-every 1 --output .gpu/scenes
#   python scripts/bench_nvs.py prepare --scene ../shared/data/strecha/Herz-Jesus-P8 --views 5 --test-every 1 --output .gpu/scenes
#   tar -czf .gpu/scenes.tar.gz -C .gpu scenes/fox_6 scenes/fox_12 && rm -r .gpu/scenes
#     (the stereo prior's full-size depth maps make the four datasets 171 MB, 40 MB gzipped: fox 6 and
#     12 take 7.4 + 13 MB, fountain-P11 and Herz-Jesus-P8 9.2 + 8.9 MB. With the wheels (30 MB) and the
#     kernels (7.4 MB), the fox pair fits the 64 MiB a call, and the Strecha pair, with them again, the
#     next: an idle machine is released within a minute, so each call should expect a fresh one)
#   bash scripts/build_gsplat_kernels.sh     # optional: gsplat's kernels, so the device does not compile them
#   bash scripts/gpu_check.sh --prepare-mast3r   # optional: MASt3R's Python sources and 24 fox photos (5 MB)
# then run, with carry [".gpu"]:   bash scripts/gpu_check.sh [STEPS] [DATASET ...]
# (default 7000 steps on every prepared dataset; name datasets, e.g. fox_6, to run fewer).
# VARIANTS="spars3r splatfacto-defaults" runs fewer variants, TPO="500" fewer pose-step counts;
# VARIANTS="spars3r spars3r-warped" gives the warped-view rows (issue 14) on the same datasets;
# INSTALL=0 skips the wheels. Without a GPU the gsplat build and CUDA tests are skipped, so the
# rest can be tried on the development machine:
#   INSTALL=0 VARIANTS=spars3r TPO=5 bash scripts/gpu_check.sh 30 Herz-Jesus-P8_5
#
# Sizing (an estimate, not yet measured): a variant at 3000 steps on fox's 540x960 photos, then
# scored after 100 and 500 pose steps on 6 test views, should take one to two minutes on an
# H200, so one 10-minute call holds about `VARIANTS="splatfacto-defaults spars3r" bash
# scripts/gpu_check.sh 3000 fox_6` with time to spare; the log's timestamps give the real
# figures for sizing the next call.
#
# In order, each step bounded so that what finished comes back: install the wheels, build
# gsplat's CUDA kernels for this GPU (timed), the CUDA tests, then per dataset the variants
# of bench_nvs.py (one JSON per run), then `spars-ns export-splat` of a GPU-trained run. Where
# .gpu/mast3r_py exists, MASt3R at scale (scripts/bench_mast3r.py, random weights of the real size)
# at 6, 12 and 24 views runs after the CUDA tests (mast3r.jsonl in benchmarks.tar).
# Everything lands in $OUT: log.txt, benchmarks.tar (the JSON files), splat_header.txt.
set -uo pipefail
if [ "${1:-}" = --prepare-mast3r ]; then
    # instantsplat ships MASt3R's packages but only as a cp311 wheel; their Python sources run on 3.12
    # (its cuRoPE kernel is the one compiled part, and import_mast3r does without it).
    set -e
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --dest /tmp/instantsplat instantsplat==1.17.6
    python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, '.gpu/mast3r_py') for n in z.namelist() if n.split('/')[0] in ('mast3r', 'dust3r', 'croco') and not n.endswith('.so')]" /tmp/instantsplat/instantsplat-1.17.6-*.whl
    mkdir -p .gpu/mast3r_images
    ls ../shared/data/fox/images/*.jpg | awk 'NR % 2 == 1' | head -24 | xargs -I{} cp {} .gpu/mast3r_images/
    du -sh .gpu/mast3r_py .gpu/mast3r_images
    exit 0
fi
out=${OUT:-/tmp/gpu_check}
json=/tmp/benchmarks  # tarred into $OUT after every run: at most 8 files come back
rm -rf "$json" /tmp/runs
mkdir -p "$out" "$json"
exec > >(tee "$out/log.txt") 2>&1
steps=${1:-7000}
shift || true
[ -f .gpu/scenes.tar.gz ] && tar -xzf .gpu/scenes.tar.gz -C .gpu
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || mapfile -t datasets < <(ls .gpu/scenes)
read -r -a variants <<< "${VARIANTS:-splatfacto-defaults splatfacto spars3r spars3r-mcmc}"
read -r -a tpo <<< "${TPO:-100 500}"  # counts of test-time pose optimisation steps to score after
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
stamp() { echo "[$(date +%T) +$((SECONDS))s] $*"; }

stamp "machine"
gpu=0; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv && gpu=1
if [ "${INSTALL:-1}" = 1 ]; then
    python3 -m pip install -q --no-index --no-deps .gpu/wheels/*.whl || exit 1
fi
stamp "installed"; python3 -c "import torch, gsplat, nerfstudio; print(torch.__version__, gsplat.__version__)"

if [ "$gpu" = 1 ] && [ -f .gpu/gsplat_cuda.so ]; then
    # gsplat's kernels prebuilt on the development machine (nvcc 13.0, torch 2.11.0+cu130, sm_90; see
    # scripts/build_gsplat_kernels.sh): gsplat imports `gsplat.csrc` before it compiles, so a module of
    # that name that loads the build saves the minutes of nvcc. If it cannot load, gsplat compiles.
    site=$(python3 -c "import gsplat, os; print(os.path.dirname(gsplat.__file__))")
    cp .gpu/gsplat_cuda.so "$site/gsplat_cuda_prebuilt.so"
    printf '%s\n' "import importlib.util, os" \
        "_spec = importlib.util.spec_from_file_location('gsplat_cuda', os.path.join(os.path.dirname(__file__), 'gsplat_cuda_prebuilt.so'))" \
        "_module = importlib.util.module_from_spec(_spec)" "_spec.loader.exec_module(_module)" "globals().update(vars(_module))" \
        > "$site/csrc.py"
fi
if [ "$gpu" = 1 ]; then
    # The first CUDA call compiles gsplat (nvcc, one architecture) unless prebuilt: time it apart from the tests.
    python3 -c "from gsplat.cuda._backend import _C; print('gsplat kernels', _C is not None)"
    stamp "gsplat built"
    timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cpu_rasterize.py
    stamp "CUDA tests done"
fi
if [ "$gpu" = 1 ] && [ -d .gpu/mast3r_py ]; then
    for views in 6 12 24; do
        PYTHONPATH=.gpu/mast3r_py timeout 200 python3 scripts/bench_mast3r.py --views "$views" --images .gpu/mast3r_images \
            --device cuda --output "$json/mast3r.jsonl"
    done
    PYTHONPATH=.gpu/mast3r_py timeout 200 python3 scripts/bench_mast3r.py --views 12 --images .gpu/mast3r_images --device cuda \
        --theirs --no-global-alignment --output "$json/mast3r.jsonl"
    stamp "MASt3R at scale done"
    tar -cf "$out/benchmarks.tar" -C "$(dirname "$json")" "$(basename "$json")"
fi

for dataset in "${datasets[@]}"; do
    for variant in "${variants[@]}"; do
        timeout 540 python3 scripts/bench_nvs.py run --prepared ".gpu/scenes/$dataset" --steps "$steps" \
            --variants "$variant" --test-pose-steps "${tpo[@]}" --json-dir "$json" --runs /tmp/runs
        stamp "$dataset $variant done"
        tar -cf "$out/benchmarks.tar" -C "$(dirname "$json")" "$(basename "$json")"
    done
done

config=$(ls /tmp/runs/*spars3r/*/spars3r/*/config.yml 2>/dev/null | head -1)
if [ -n "$config" ]; then
    spars-ns export-splat --load-config "$config" --output-dir /tmp/export && head -c 2000 /tmp/export/splat.ply | strings | head -80 > "$out/splat_header.txt"
    stamp "exported $config"
fi
python3 scripts/bench_nvs.py table "$json"/*.json
