#!/usr/bin/env bash
# Install (into .venv), then run the whole flow on built-in synthetic data:
# generate a BreakHis-layout set -> train briefly on the CPU -> score it with the Beam pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python scripts/demo.py "$@"
