#!/usr/bin/env bash
# Mutation testing by hand (not in CI): mutmut mutates the modules listed under [tool.mutmut] in
# pyproject.toml (metrics, gate, calibration, run store/verify) and runs their fast tests against each
# mutant. Surviving mutants are listed at the end; each must be killed by a new test or explained.
# Usage: bash tools/mutation.sh            (about 10-20 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/pip install -q "mutmut>=3.3,<4"
rm -rf mutants
.venv/bin/mutmut run "$@" || true
.venv/bin/mutmut results
