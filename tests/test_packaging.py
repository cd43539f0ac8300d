"""setup.py: the distribution's name, the dependency bounds that matter for safety, package data."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO_ROOT

# The last published safe_mode bypasses of keras.models.load_model, with their first fixed release.
SAFE_MODE_FIXES = {
    "CVE-2025-1550": "3.9.0",
    "CVE-2025-8747": "3.11.0",
    "CVE-2025-9906": "3.11.0",
}


def _setup_arguments() -> dict:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    return {
        keyword.arg: ast.literal_eval(keyword.value)
        for keyword in call.keywords
        if keyword.arg in ("name", "install_requires", "entry_points")
    }


def test_keras_lower_bound_excludes_every_known_safe_mode_bypass():
    requirements = [Requirement(text) for text in _setup_arguments()["install_requires"]]
    keras = next(requirement for requirement in requirements if requirement.name == "keras")
    for cve, fixed in SAFE_MODE_FIXES.items():
        major, minor, _ = Version(fixed).release
        last_vulnerable = f"{major}.{minor - 1}.99"
        assert not keras.specifier.contains(last_vulnerable), f"{cve}: keras {last_vulnerable}"
    assert keras.specifier.contains(importlib.metadata.version("keras"))


@pytest.mark.parametrize("script", ["breakhis-train", "breakhis-score", "breakhis-report"])
def test_each_console_script_is_installed_and_shows_its_commands_help(script):
    targets = dict(
        line.replace(" ", "").split("=", 1)
        for line in _setup_arguments()["entry_points"]["console_scripts"]
    )
    module, function = targets[script].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    installed = pathlib.Path(sys.executable).parent / script
    result = subprocess.run(
        [str(installed), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--output_dir" in result.stdout


def test_the_distribution_name_is_not_the_unrelated_pypi_project():
    assert _setup_arguments()["name"] != "breakhis-gradcam"


def _template_files(root: pathlib.Path) -> set[str]:
    """Every file under model/reports/templates, relative to the folder holding `model`."""
    return {
        path.relative_to(root).as_posix()
        for path in (root / "model" / "reports" / "templates").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_report_templates_ship_in_the_sdist_and_render_once_installed_from_it(tmp_path):
    """What Dataflow does with --setup_file: `setup.py sdist`, then pip installs it on a worker."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(REPO_ROOT / "setup.py", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for package in ("model", "train_job", "pipelines"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=ignore)
    expected = _template_files(REPO_ROOT)
    assert {"model/reports/templates/base.html", "model/reports/templates/report.html"} <= expected

    # The command Beam's stager runs when the `build` package is absent (as in this venv).
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert expected <= shipped, sorted(expected - shipped)

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--target", str(site), str(sdist)],
        check=True,
        capture_output=True,
    )
    assert expected <= _template_files(site), sorted(expected - _template_files(site))
    render = (
        "import model, sys\n"
        "from model.reports.html_report import render_report\n"
        "print(model.__file__)\n"
        "print(render_report(title='installed', metrics=None, plots={}, gallery=[]))\n"
    )
    rendered = subprocess.run(
        [sys.executable, "-c", render],
        cwd=tmp_path,  # not the repository: templates must come from the installed package
        env={**os.environ, "PYTHONPATH": str(site)},
        check=True,
        capture_output=True,
        text=True,
    )
    module_file, page = rendered.stdout.split("\n", 1)
    assert pathlib.Path(module_file).is_relative_to(site)
    assert "<h1>installed</h1>" in page and "</footer>" in page
