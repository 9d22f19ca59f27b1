#!/usr/bin/env bash
# Create .venv and install levit-edge with its test tools. Idempotent; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: this pair installs from the machine's local wheel store, and timm needs torchvision.
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
fi
.venv/bin/pip install -q -e '.[dev]'
# TensorRT itself cannot be installed here; its type stubs can (without their tensorrt dependency),
# so mypy checks the TensorRT code against the real API.
.venv/bin/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
.venv/bin/python tools/trt_stubs.py >/dev/null
# The emulated aarch64 platform of 'validate --platform aarch64' and tests/test_platform_aarch64.py: about
# 126 MB from Debian's archive and PyPI the first time (about 30 s here), then reused from .cache/platforms.
.venv/bin/levit-edge setup-platform aarch64 --cache .cache/platforms --quiet
