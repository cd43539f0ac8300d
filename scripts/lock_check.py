"""Compare this interpreter's installed packages with a lock; optionally remove the unlocked ones.

Exit 1 and one line per difference when the two disagree. scripts/setup_env.sh runs it with
--remove-unlocked after installing the lock, so a rerun after a lock change leaves nothing extra.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

from packaging.utils import canonicalize_name

from pipelines.launch.dependency_lock import installed_versions, locked_versions

# Installed beside the lock by design: the installer itself and this package (editable).
NOT_LOCKED = {"pip", canonicalize_name("breakhis-vgg16-gradcam")}


def differences(lock: pathlib.Path) -> tuple[dict[str, tuple[str, str | None]], list[str]]:
    """(locked packages missing or at another version: {name: (locked, installed)}, unlocked)."""
    locked, installed = locked_versions(lock), installed_versions()
    wrong = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    unlocked = sorted(set(installed) - set(locked) - NOT_LOCKED)
    return wrong, unlocked


def main(argv: list[str] | None = None) -> int:
    """Print every difference between the environment and the lock; 0 when there is none."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=pathlib.Path)
    parser.add_argument(
        "--remove-unlocked", action="store_true", help="pip uninstall packages the lock lacks"
    )
    args = parser.parse_args(argv)
    wrong, unlocked = differences(args.lock)
    if unlocked and args.remove_unlocked:
        print(f"lock_check: removing packages {args.lock} does not list: {', '.join(unlocked)}")
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", *unlocked], check=True
        )
        wrong, unlocked = differences(args.lock)
    for name, (version, have) in sorted(wrong.items()):
        print(f"lock_check: {name}: lock {version}, installed {have or 'nothing'}", file=sys.stderr)
    for name in unlocked:
        print(f"lock_check: {name}: installed, not in {args.lock}", file=sys.stderr)
    return 1 if wrong or unlocked else 0


if __name__ == "__main__":
    sys.exit(main())
