#!/usr/bin/env bash
# Everything the GPU figures need, in one run of at most about 8 minutes on one CUDA GPU:
# the machine, the CUDA tests, then the benchmarks (lego at 400 px with the standard preset,
# the whole pipeline on a 100-view grounded scene, click latency with the tiny SAM).
# Without CUDA it says so and skips those steps, so CI runs it too.
#
#     bash scripts/gpu_check.sh            # after scripts/setup.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
DATA="${DFF_DATA:-../shared/data}"
OUT="${DFF_GPU_CHECK_DIR:-$(mktemp -d -t dff_gpu_check_XXXX)}"
status=0
step() { echo; echo "== $1"; }
run() {  # run "$@" within $LIMIT seconds; a failure is reported and the check goes on
  if ! timeout "${LIMIT:-300}" "$@"; then
    echo "FAILED (or over ${LIMIT:-300} s): $*"
    status=1
  fi
}

step "machine"
"$PY" - <<'PY'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
try:
    import tinycudann  # noqa: F401
    print("tiny-cuda-nn: imported (its hash grid is used)")
except ImportError:
    print("tiny-cuda-nn: not installed (the PyTorch hash grid is used)")
PY
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  step "no CUDA GPU here: the CUDA tests and the GPU benchmarks are skipped"
  exit 0
fi

step "CUDA tests"
LIMIT=120 run "$PY" -m pytest -q -p no:cacheprovider tests/worker/test_cuda.py

step "lego, 400 px, standard preset: held-out PSNR and training time"
LIMIT=240 run "$PY" scripts/bench_nerf.py --dataset "$DATA/nerf_synthetic_lego" --downscale 1 --preset standard --profile

step "whole pipeline, grounded scene of 100 views (labels teacher), standard preset"
LIMIT=200 run "$PY" scripts/bench_pipeline.py --views 100 --workspace "$OUT/workspace" --scene "$OUT/scene"

step "clicks and the tiny SAM teacher on that workspace: latency on the GPU"
LIMIT=120 run "$PY" scripts/bench_click.py --scene "$OUT/scene" --workspace "$OUT/workspace" --sam-steps 300 --repeats 3 --encoders vit_b

exit $status
