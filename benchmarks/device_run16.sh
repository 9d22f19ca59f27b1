#!/usr/bin/env bash
# Issue 16, second pass, on the lent device machine (16-core Intel Xeon, AVX-512 VNNI + AMX), run from a
# folder holding levit_edge/, benchmarks/, onnxruntime-1.32.0 (the version of this project's machine) as a
# wheel and OpenVINO 2026.4.1 as a CPU-only tar.xz (libopenvino, the CPU plugin, ONNX/IR frontends, Python):
#   bash benchmarks/device_run16.sh   # -> $OUT/xeon-levers-16b.json, $OUT/xeon-peers-16b.json, logs
set -uo pipefail
OUT=${OUT:-/tmp/levit-bench-out}
mkdir -p "$OUT" /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site onnxruntime-*.whl || exit 1
tar -xJf openvino-*-cpu.tar.xz -C /tmp/site || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
python3 -c "import onnxruntime, openvino, torch, timm; print('onnxruntime', onnxruntime.__version__, 'openvino', openvino.__version__, 'torch', torch.__version__, 'timm', timm.__version__)" || exit 1
lscpu >"$OUT/lscpu.txt"
python3 benchmarks/cpu_int8_levers.py levers --out "$OUT/xeon-levers-16b.json" --threads 1,4,16 --budget 5 \
    --command "python3 benchmarks/cpu_int8_levers.py levers --out xeon-levers-16b.json --threads 1,4,16 --budget 5 (bash benchmarks/device_run16.sh)" \
    2>&1 | grep -v "pre-processing" | tee "$OUT/levers.log" || exit 1
python3 benchmarks/cpu_int8_levers.py peers --out "$OUT/xeon-peers-16b.json" --levers "$OUT/xeon-levers-16b.json" --threads 1,4,16 --budget 5 \
    --command "python3 benchmarks/cpu_int8_levers.py peers --out xeon-peers-16b.json --levers xeon-levers-16b.json --threads 1,4,16 --budget 5 (bash benchmarks/device_run16.sh)" \
    2>&1 | grep -v "pre-processing" | tee "$OUT/peers.log"
