#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The layers of docs/architecture.md: an upward import or a cycle between them fails here.
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -q -n auto "$@"
