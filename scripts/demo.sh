#!/usr/bin/env bash
# Set up (if needed), then run the whole pipeline offline on the built-in generated fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/levit-edge demo "$@"
