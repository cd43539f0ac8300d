#!/usr/bin/env bash
# Create .venv (if missing) and install exactly the committed lock (requirements/dev.txt: the
# package's dependencies and its test tools, every version and hash pinned), then the package
# itself in editable mode. Run by scripts/demo.sh and scripts/test.sh; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
# The locks are resolved and tested for one Python minor (pyproject.toml, [tool.uv] environments).
WANT="$(grep -oP "^environments = \\[\"python_version == '\\K[0-9.]+" pyproject.toml)"
if [ -z "${PYTHON:-}" ]; then
  PYTHON="python$WANT"
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
fi
if [ -x .venv/bin/python ]; then
  HAVE="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  WHERE=".venv (delete it to rebuild with another Python)"
else
  HAVE="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  WHERE="$PYTHON"
fi
if [ "$HAVE" != "$WANT" ]; then
  echo "setup_env: $WHERE is Python $HAVE; the lock (requirements/) is for Python $WANT." \
    "Install Python $WANT and rerun with PYTHON=/path/to/python$WANT." >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# --require-hashes: every package, direct or transitive, must be in the lock with its hash.
# --no-build-isolation: the package builds with the lock's setuptools, not a fresh download.
.venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.txt
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
# Packages a rerun after a lock change left behind are removed, so .venv holds exactly the lock.
.venv/bin/python scripts/lock_check.py --remove-unlocked requirements/dev.txt
