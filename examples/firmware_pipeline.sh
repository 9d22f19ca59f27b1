#!/usr/bin/env bash
# Firmware pipeline: export an accuracy-gated INT8 LeViT for ONNX Runtime from a reviewed config file,
# verify the run against its manifest, and hand over the firmware deliverables.
#
# Usage:  examples/firmware_pipeline.sh CONFIG.toml DELIVERABLES_DIR
#   CONFIG.toml       levit-edge export options; needs target = "ort" (or "all") and int8 = true
#   DELIVERABLES_DIR  created (must be new or empty): model.int8.ort, required_operators*.config,
#                     manifest.json, report.{json,html,md}, model.fp32.ort with ort_format_fp32, SHA256SUMS
# Environment (optional):
#   RUNS_DIR   where the run directory goes [artifacts]     RUN_NAME  its name [firmware-<UTC time>]
#   LEVIT_EDGE the levit-edge command [levit-edge]          PYTHON    a Python 3 [python3]
#
# Exit codes:
#   0  delivered (the accuracy gate passed)
#   1  bad input or config (levit-edge says which in one line), or the config does not produce the
#      ONNX Runtime deliverables; nothing delivered
#   2  usage error (this script's arguments, or an option levit-edge does not know); nothing delivered
#   3  accuracy gate failed: INT8 lost more top-1 accuracy than max_drop; nothing delivered, the run
#      directory is kept for review
#   5  the run or the copies do not match manifest.json; nothing trustworthy delivered
#   levit-edge's exit 4 (no TensorRT engine built on this host, target = "all") is not a failure here:
#   everything for ONNX Runtime is complete, so the script delivers and exits 0.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 CONFIG.toml DELIVERABLES_DIR" >&2
    exit 2
fi
config=$1
dest=$2
levit_edge=${LEVIT_EDGE:-levit-edge}
python=${PYTHON:-python3}
runs=${RUNS_DIR:-artifacts}
name=${RUN_NAME:-firmware-$(date -u +%Y%m%d-%H%M%S)}
run="$runs/$name"

if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
    echo "FAILED: $dest is not empty; deliver into a new folder" >&2
    exit 1
fi

# 1. Export, quantize, validate and gate. --out/--name override the config's out/name.
echo "==> levit-edge export --config $config  (run: $run)"
"$levit_edge" export --config "$config" --out "$runs" --name "$name"
code=$?
case $code in
    0) echo "==> export passed the accuracy gate" ;;
    1)
        echo "FAILED: bad input or config (see the error line above); nothing delivered" >&2
        exit 1
        ;;
    2)
        echo "FAILED: levit-edge rejected the command line (usage error); nothing delivered" >&2
        exit 2
        ;;
    3)
        echo "FAILED: accuracy gate: INT8 lost more top-1 accuracy than max_drop allows; nothing delivered." >&2
        echo "        The run is kept for review: $run/report.html" >&2
        exit 3
        ;;
    4) echo "==> no TensorRT engine here (build it on the GPU target); the ONNX Runtime deliverables are complete" ;;
    *)
        echo "FAILED: levit-edge exited with $code (a bug: see the traceback above); nothing delivered" >&2
        exit "$code"
        ;;
esac

# 2. Every file of the run must match its manifest (nothing changed since export).
echo "==> levit-edge verify $run"
if ! "$levit_edge" verify "$run"; then
    echo "FAILED: $run does not match its manifest.json; nothing delivered" >&2
    exit 5
fi

# 3. Collect the deliverables.
files=(model.int8.ort required_operators.config required_operators_and_types.config
    manifest.json report.json report.html report.md)
if [ -f "$run/model.fp32.ort" ]; then
    files+=(model.fp32.ort)
fi
for f in "${files[@]}"; do
    if [ ! -f "$run/$f" ]; then
        echo "FAILED: $run has no $f: set target = \"ort\" (or \"all\") and int8 = true in $config" >&2
        exit 1
    fi
done
mkdir -p "$dest"
for f in "${files[@]}"; do
    cp "$run/$f" "$dest/$f" || exit 1
done

# 4. The copies must carry the hashes the manifest recorded (SHA256SUMS is for the firmware side).
if ! "$python" - "$dest" "${files[@]}" >"$dest/SHA256SUMS" <<'PY'; then
import json
import pathlib
import sys

dest = pathlib.Path(sys.argv[1])
listed = json.loads((dest / "manifest.json").read_text())["files"]
for name in sys.argv[2:]:
    if name != "manifest.json":
        print(f"{listed[name]['sha256']}  {name}")
PY
    echo "FAILED: cannot read the hashes from $dest/manifest.json" >&2
    exit 5
fi
if ! (cd "$dest" && sha256sum --check --quiet SHA256SUMS); then
    echo "FAILED: the copies in $dest do not match manifest.json" >&2
    exit 5
fi
echo "==> delivered to $dest: ${files[*]} SHA256SUMS"
exit 0
