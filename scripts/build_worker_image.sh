#!/usr/bin/env bash
# Build the Dataflow worker image (Dockerfile) with the lock's Python and Beam versions.
#
#   bash scripts/build_worker_image.sh IMAGE [docker build flags...]
#   bash scripts/build_worker_image.sh --dry-run IMAGE   # print the docker command, run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/build_worker_image.sh [--dry-run] IMAGE [docker build flags...]" >&2
  exit 2
fi
IMAGE="$1"
shift
PYTHON_VERSION="$(grep -oP "^environments = \\[\"python_version == '\\K[0-9.]+" pyproject.toml)"
BEAM_VERSION="$(grep -oP '^apache-beam==\K[^ ;\\]+' requirements/gpu.txt)"
COMMAND=(docker build --build-arg "PYTHON_VERSION=$PYTHON_VERSION"
  --build-arg "BEAM_VERSION=$BEAM_VERSION" --tag "$IMAGE" "$@" .)
if [ "$DRY_RUN" = 1 ]; then
  printf '%q ' "${COMMAND[@]}"
  echo
else
  exec "${COMMAND[@]}"
fi
