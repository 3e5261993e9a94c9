#!/usr/bin/env bash
# The full test suite: set up, then unit and integration tiers (real droplets over real SSH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
exec .venv/bin/python -m pytest "$@"
