#!/usr/bin/env bash
# Install the lock (into .venv) and run the tests. Extra arguments go to pytest.
#
#   bash scripts/test.sh          # the fast tier: every module's contract (pytest -m "not slow")
#   bash scripts/test.sh --slow   # the slow end-to-end tier only (pytest -m slow)
#   bash scripts/test.sh --all    # both tiers: what CI runs
#
# Tests run in one process per core (pytest-xdist), at most 4: each process builds the shared
# fixtures (a tiny training, a tiny cross-validation) once. TEST_WORKERS=0 runs them in this
# process (for pdb or -s); TEST_WORKERS=N sets the number.
set -euo pipefail
cd "$(dirname "$0")/.."
TIER=(-m "not slow")
case "${1:-}" in
  --slow) TIER=(-m slow); shift ;;
  --all) TIER=(); shift ;;
esac
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-auto}" --maxprocesses 4 "${TIER[@]}" "$@"
