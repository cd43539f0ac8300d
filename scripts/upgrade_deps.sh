#!/usr/bin/env bash
# Move the lock forward on purpose: lock the newest releases setup.py allows in a throwaway copy
# of this working tree, install them into a throwaway .venv there, run the whole test suite
# (both tiers) against them, and copy the new requirements/*.txt back here only when it passes.
#
#   bash scripts/upgrade_deps.sh                      # every package to its newest release
#   bash scripts/upgrade_deps.sh --upgrade-package apache-beam   # arguments go to lock_deps.sh
#
# Nothing here changes until the tests pass; on failure the copy is kept for a look and its
# path printed. Takes about as long as the full suite plus one install.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
UPGRADE=("$@")
[ ${#UPGRADE[@]} -gt 0 ] || UPGRADE=(--upgrade)
UV="${UV:-uv}"
command -v "$UV" >/dev/null 2>&1 || UV="$REPO/.venv/bin/uv"
if ! [ -x "$UV" ] && ! command -v "$UV" >/dev/null 2>&1; then
  echo "upgrade_deps: uv not found; run bash scripts/setup_env.sh first (the dev extra installs it)" >&2
  exit 2
fi
export UV
# The real-data tests find the sample beside this repository, not beside the copy.
export BREAKHIS_SAMPLE="${BREAKHIS_SAMPLE:-$REPO/../shared/breakhis-sample}"
WORK="$(mktemp -d -t breakhis-upgrade.XXXXXX)"
# The working tree as it is (tracked and new files, not what .gitignore names: .venv, outputs).
git ls-files --cached --others --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$WORK"
cd "$WORK"
echo "upgrade_deps: locking the newest releases in $WORK"
bash scripts/lock_deps.sh "${UPGRADE[@]}"
# Every pin as "file: package==version", to compare the two trees' locks.
pins() { (cd "$1" && grep -E '^[a-z0-9]' requirements/dev.txt requirements/gpu.txt \
  | sed 's/ *;.*//; s/ *\\$//' | sort -u); }
CHANGED="$(diff <(pins "$REPO") <(pins .) | sed -n 's/^> //p' || true)"
if [ -z "$CHANGED" ]; then
  echo "upgrade_deps: the lock already holds the newest releases; testing them anyway"
else
  echo "upgrade_deps: new versions (file:package==version):"
  echo "$CHANGED" | sed 's/^/  /'
fi
if ! bash scripts/test.sh --all; then
  echo "upgrade_deps: the tests fail on the new versions; the lock here is unchanged." \
    "The throwaway copy is kept at $WORK" >&2
  exit 1
fi
cp requirements/runtime.txt requirements/dev.txt requirements/gpu.txt "$REPO/requirements/"
cd "$REPO"
rm -rf "$WORK"
echo "upgrade_deps: the tests pass; requirements/ rewritten." \
  "Run bash scripts/setup_env.sh to install it here, then commit requirements/."
