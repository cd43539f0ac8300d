"""The committed dependency locks (requirements/*.txt): where they are and what they pin."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re

from packaging.markers import Marker
from packaging.utils import canonicalize_name

# Present in a source checkout and an editable install; absent from an installed wheel.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCK_DIR = REPO_ROOT / "requirements"
RUNTIME_LOCK = LOCK_DIR / "runtime.txt"  # Dataflow CPU workers' --requirements_file
DEV_LOCK = LOCK_DIR / "dev.txt"  # what scripts/setup_env.sh installs
GPU_LOCK = LOCK_DIR / "gpu.txt"  # the Dataflow GPU worker image (Dockerfile)
PYPROJECT = REPO_ROOT / "pyproject.toml"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
_ENVIRONMENT = re.compile(r"""^environments\s*=\s*\[\s*["']python_version\s*==\s*'([0-9.]+)'""")


def locked_versions(lock: pathlib.Path) -> dict[str, str]:
    """{canonical name: version} of every pin in a lock whose marker holds for this interpreter."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def locked_python() -> str:
    """The one Python minor ("3.11") the locks are resolved for (pyproject.toml, [tool.uv])."""
    for line in PYPROJECT.read_text().splitlines():
        match = _ENVIRONMENT.match(line)
        if match:
            return match.group(1)
    raise ValueError(f"{PYPROJECT}: no [tool.uv] environments line naming one python_version")


def installed_versions() -> dict[str, str]:
    """{canonical name: version} of every distribution installed beside this interpreter."""
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }


def beam_differs_from_lock() -> str | None:
    """A one-line warning when the running Beam is not the runtime lock's, else None.

    None too when there is no lock to compare with (the package installed from a wheel).
    """
    if not RUNTIME_LOCK.is_file():
        return None
    locked = locked_versions(RUNTIME_LOCK).get("apache-beam")
    running = importlib.metadata.version("apache-beam")
    if locked is None or locked == running:
        return None
    return (
        f"apache-beam {running} is running but {RUNTIME_LOCK.relative_to(REPO_ROOT)} pins "
        f"{locked}, which is what Dataflow workers install; run `bash scripts/setup_env.sh`"
    )
