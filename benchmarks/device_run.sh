#!/usr/bin/env bash
# What ran on the lent device machine (one NVIDIA H100, 16-core Intel Xeon with AVX-512 VNNI and AMX),
# from the repository root, with .whl/ (onnxruntime 1.32.0 to match the AVX2 machine) and the trained
# fixture (.devcarry/fixture: result.json, checkpoint.pth, data/val, data/calib) carried along.
#   bash benchmarks/device_run.sh levers  # GEMM ceiling + every lever (and recipe accuracy) -> xeon-levers.json
#   bash benchmarks/device_run.sh cpu     # export + side-by-side latency of 3 models, profile -> xeon-vnni-amx.json
#   bash benchmarks/device_run.sh gpu     # PyTorch eager and torch.compile on CUDA -> h100-gpu.json
#   bash benchmarks/device_run.sh final   # profile of the tool's current artifacts (xeon-profile.json), then gpu
set -uo pipefail
OUT=${OUT:-/tmp/levit-bench-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
python3 -c "import sys, timm, onnxruntime, torch, onnx, typer, rich; print('python', sys.version.split()[0], 'timm', timm.__version__, 'onnxruntime', onnxruntime.__version__, 'torch', torch.__version__, 'onnx', onnx.__version__)" || exit 1
XEON="Intel Xeon with AVX-512 VNNI and AMX (device machine, 16 cores)"
case "${1:-cpu}" in
levers)
    lscpu >"$OUT/lscpu.txt"
    python3 benchmarks/run_benchmarks.py --tag xeon-levers --title "$XEON: levers" \
        --suite kernels,levers --models levit_128s --levers-budget 20 --fixture .devcarry/fixture \
        --work /tmp/levit-work --results-dir "$OUT" --markdown "$OUT/section-levers.md" \
        --command "bash benchmarks/device_run.sh levers" 2>&1 | tee "$OUT/levers.log"
    ;;
cpu)
    python3 benchmarks/run_benchmarks.py --tag xeon-vnni-amx --title "$XEON" \
        --suite cpu,profile --extra-recipes ort,tool-vnni --work /tmp/levit-work \
        --results-dir "$OUT" --markdown "$OUT/section-cpu.md" --command "bash benchmarks/device_run.sh cpu" \
        2>&1 | tee "$OUT/cpu.log"
    ;;
final)
    python3 benchmarks/run_benchmarks.py --tag xeon-profile --title "$XEON: profile of the current artifacts" \
        --suite profile --models levit_128s --work /tmp/levit-work --results-dir "$OUT" --markdown "" \
        --command "bash benchmarks/device_run.sh final" 2>&1 | tee "$OUT/profile.log"
    bash "$0" gpu
    ;;
gpu384)  # levit_384 again: the first gpu run hit dynamo's recompile limit before it (fixed since)
    python3 benchmarks/run_benchmarks.py --tag h100-gpu-384 --suite gpu --models levit_384 --work /tmp/levit-work \
        --results-dir "$OUT" --markdown "" --command "bash benchmarks/device_run.sh gpu384" 2>&1 | tee "$OUT/gpu384.log"
    ;;
levers+cpu)  # both in one call (one machine start)
    bash "$0" levers
    bash "$0" cpu
    ;;
gpu)
    nvidia-smi >"$OUT/nvidia-smi.txt"
    python3 benchmarks/run_benchmarks.py --tag h100-gpu --title "NVIDIA H100 80GB HBM3 (device machine): GPU baseline" \
        --suite gpu --partial "$OUT/gpu-rows.jsonl" --work /tmp/levit-work \
        --results-dir "$OUT" --markdown "" --command "bash benchmarks/device_run.sh gpu" \
        2>&1 | tee "$OUT/gpu.log"
    ;;
esac
