"""The locks, the Dockerfile, Dataflow workers and this environment agree on one version set."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipelines.launch import dependency_lock
from pipelines.launch.dependency_lock import (
    DEV_LOCK,
    GPU_LOCK,
    RUNTIME_LOCK,
    beam_differs_from_lock,
    locked_python,
    locked_versions,
)
from tests.conftest import REPO_ROOT

# What Dataflow compares between the launcher and its workers, and what the model needs.
KEY_PACKAGES = ("apache-beam", "tensorflow", "keras")
LOCKS = (RUNTIME_LOCK, DEV_LOCK, GPU_LOCK)


def _install_requires() -> list[Requirement]:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    (requires,) = [kw.value for kw in call.keywords if kw.arg == "install_requires"]
    return [Requirement(text) for text in ast.literal_eval(requires)]


def test_this_environment_runs_the_locks_python_and_key_packages():
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == locked_python()
    locked = locked_versions(RUNTIME_LOCK)
    for name in KEY_PACKAGES:
        assert importlib.metadata.version(name) == locked[name], name


def test_every_lock_pins_the_same_version_of_every_package_they_share():
    runtime = locked_versions(RUNTIME_LOCK)
    assert set(KEY_PACKAGES) <= set(runtime)
    for lock in (DEV_LOCK, GPU_LOCK):
        other = locked_versions(lock)
        assert set(runtime) <= set(other), lock.name
        differing = {
            name: (runtime[name], other[name]) for name in runtime if runtime[name] != other[name]
        }
        assert not differing, (lock.name, differing)


def test_the_locks_satisfy_setup_py_so_they_are_not_stale():
    # A range raised in setup.py without `bash scripts/lock_deps.sh` fails here.
    runtime = locked_versions(RUNTIME_LOCK)
    for requirement in _install_requires():
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(runtime[name], prereleases=True), (
            f"{requirement} but {RUNTIME_LOCK.name} pins {runtime[name]}"
        )


def test_every_locked_package_carries_a_hash():
    for lock in LOCKS:
        text = lock.read_text()
        pins = re.findall(r"^[a-z0-9][^\n]*==", text, flags=re.MULTILINE)
        entries = re.split(r"\n(?=[a-z0-9])", text)
        assert pins and all("--hash=sha256:" in entry for entry in entries[1:]), lock.name


def test_the_dockerfile_takes_python_and_beam_from_the_lock_and_installs_the_gpu_lock():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    # No hand-written release number anywhere: versions arrive as build arguments.
    assert not re.search(r"==\s*\d|_sdk:\d|VERSION=\d", dockerfile)
    assert "--require-hashes -r requirements/gpu.txt" in dockerfile
    printed = subprocess.run(
        ["bash", "scripts/build_worker_image.sh", "--dry-run", "example/image:gpu"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    command = shlex.split(printed)
    assert command[:2] == ["docker", "build"]
    assert f"PYTHON_VERSION={locked_python()}" in command
    assert f"BEAM_VERSION={locked_versions(GPU_LOCK)['apache-beam']}" in command
    assert command[-1] == "."


def test_no_warning_when_the_running_beam_is_the_locks():
    assert beam_differs_from_lock() is None


def test_a_running_beam_other_than_the_locks_is_named_in_one_line(monkeypatch):
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        dependency_lock.importlib.metadata,
        "version",
        lambda name: "2.1.0" if name == "apache-beam" else real_version(name),
    )
    warning = beam_differs_from_lock()
    locked = locked_versions(RUNTIME_LOCK)["apache-beam"]
    assert warning is not None and "\n" not in warning
    assert "apache-beam 2.1.0 is running" in warning and f"pins {locked}" in warning


def test_lock_check_names_what_differs_and_exits_1(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "keras==0.0.1 \\\n    --hash=sha256:00\n"
        "nothing-installed-by-this-name==1.0 \\\n    --hash=sha256:00\n"
        "pywin32==1 ; sys_platform == 'never' \\\n    --hash=sha256:00\n"
    )
    checked = subprocess.run(
        [sys.executable, "scripts/lock_check.py", str(lock)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 1
    assert f"keras: lock 0.0.1, installed {importlib.metadata.version('keras')}" in checked.stderr
    assert "nothing-installed-by-this-name: lock 1.0, installed nothing" in checked.stderr
    assert "tensorflow: installed, not in" in checked.stderr
    assert "pywin32" not in checked.stderr  # its marker excludes this platform


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.name)
def test_markers_are_evaluated_for_this_interpreter(lock):
    # The universal locks hold Windows-only pins; none of them applies here.
    pins = locked_versions(lock)
    if sys.platform != "win32":
        assert "pywin32-ctypes" not in pins and "colorama" not in pins
