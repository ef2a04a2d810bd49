#!/usr/bin/env bash
# The GPU check of docs/scale-out.md: on a machine with a CUDA GPU, in under 8 minutes,
#   scripts/gpu_check.sh [OUT]            (default: docs/gpu-check.txt; run scripts/setup.sh first)
# 1. the CUDA test subset (tests/test_gpu_path.py and the pipeline's out-of-memory test: the
#    back-off under a limited GPU memory fraction, mixed precision, one local worker per GPU),
# 2. `python -m engine bench` once per sampler of the catalogue (512 x 512 tiles, batch 8),
# 3. the networks' throughput on 100 synthetic megapixels at fp32, bf16 and fp16,
# 4. fp32 against mixed precision on the demo image (runs/demo/rgbn.tif, made by scripts/demo.sh;
#    a synthetic 1024 x 1024 RGB when it is missing),
# each under its own time limit (together 7 min 15 s at most), into OUT with the machine's
# description. A failed step is recorded and the others still run; the exit status is then 1.
# SCDM_GPU_CHECK_SMOKE=1 runs the same steps on the CPU at tiny sizes, listing the CUDA tests
# instead of running them (tests/test_gpu_path.py runs it so); SCDM_GPU_CHECK_MODEL=<bundle folder>
# replaces the bundled model; SCDM_GPU_CHECK_SAMPLERS="ddim dpmpp" benches those samplers only;
# SCDM_GPU_CHECK_TIME_FACTOR=K multiplies every time limit (a busy machine).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(realpath -m "${1:-docs/gpu-check.txt}")"
PYTHON="${SCDM_PYTHON:-$ROOT/.venv/bin/python}"
CUDA_TESTS=(tests/test_gpu_path.py tests/test_raster_pipeline.py -k cuda)  # the tests named *cuda*
MODEL_ARGS=()
[ -n "${SCDM_GPU_CHECK_MODEL:-}" ] && MODEL_ARGS=(--model "$SCDM_GPU_CHECK_MODEL")

if [ "${SCDM_GPU_CHECK_SMOKE:-0}" = 1 ]; then
    DEVICE=cpu; PRECISIONS=fp32,bf16; MEGAPIXELS=0.002; TILE=16; BATCH=2; STEPS=2; SYNTHETIC=48
    PYTEST_MODE=(--collect-only -q)
else
    DEVICE=cuda; PRECISIONS=fp32,bf16,fp16; MEGAPIXELS=100; TILE=512; BATCH=8; STEPS=20; SYNTHETIC=1024
    PYTEST_MODE=(-q -p no:cacheprovider -rs)
fi
failed=0
work="$(mktemp -d "${TMPDIR:-/tmp}/scdm-gpu-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

# step TITLE SECONDS COMMAND...: run COMMAND under a time limit, its output into OUT under TITLE.
step() {
    local title="$1" seconds="$2" started status
    shift 2
    started=$(date +%s)
    printf '\n## %s\n$ %s\n' "$title" "$*" >> "$OUT"
    timeout "$(( seconds * ${SCDM_GPU_CHECK_TIME_FACTOR:-1} ))" "$@" >> "$OUT" 2>&1
    status=$?
    printf -- '-> exit %s after %s s\n' "$status" "$(( $(date +%s) - started ))" >> "$OUT"
    echo "gpu_check: $title: exit $status" >&2
    [ "$status" -eq 0 ] || failed=1
}

machine() {
    date -u
    git -C "$ROOT" rev-parse HEAD 2>/dev/null || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'GPUs', torch.cuda.device_count())"
}

samplers() {
    "$PYTHON" -c "from engine.diffusion import sampler_catalog; print(' '.join(sampler_catalog.names()))"
}

demo_image() {
    if [ -s runs/demo/rgbn.tif ] && [ "${SCDM_GPU_CHECK_SMOKE:-0}" != 1 ]; then
        echo runs/demo/rgbn.tif
        return
    fi
    "$PYTHON" -c "from benchmarks.bench_raster import make_input; make_input('$work/rgb.tif', $SYNTHETIC)" \
        && echo "$work/rgb.tif"
}

{ printf '## machine\n'; machine; } >> "$OUT" 2>&1
step "CUDA tests" 150 bash scripts/test.sh "${CUDA_TESTS[@]}" "${PYTEST_MODE[@]}"
for sampler in ${SCDM_GPU_CHECK_SAMPLERS:-$(samplers)}; do
    step "bench $sampler" 45 "$PYTHON" -m engine bench "${MODEL_ARGS[@]}" --device "$DEVICE" --size "$TILE" \
        --batch "$BATCH" --guidance 0 --samplers "$sampler:$STEPS"
done
step "throughput" 90 "$PYTHON" -m benchmarks.scale_out "${MODEL_ARGS[@]}" throughput --device "$DEVICE" \
    --megapixels "$MEGAPIXELS" --tile "$TILE" --batch "$BATCH" --precision "$PRECISIONS"
image="$(demo_image)" || failed=1
step "precision" 60 "$PYTHON" -m benchmarks.scale_out "${MODEL_ARGS[@]}" precision --device "$DEVICE" \
    --input "$image" --precision "$PRECISIONS"
echo "gpu_check: wrote $OUT" >&2
exit "$failed"
