#!/usr/bin/env bash
# The main job on the local provider: set up, create a local droplet, provision it, print URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/invoke up --env "${1:-local}"
