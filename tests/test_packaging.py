"""setup.py: the distribution's name and the dependency bounds that matter for safety."""

from __future__ import annotations

import ast
import importlib.metadata

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
        if keyword.arg in ("name", "install_requires")
    }


def test_keras_lower_bound_excludes_every_known_safe_mode_bypass():
    requirements = [Requirement(text) for text in _setup_arguments()["install_requires"]]
    keras = next(requirement for requirement in requirements if requirement.name == "keras")
    for cve, fixed in SAFE_MODE_FIXES.items():
        major, minor, _ = Version(fixed).release
        last_vulnerable = f"{major}.{minor - 1}.99"
        assert not keras.specifier.contains(last_vulnerable), f"{cve}: keras {last_vulnerable}"
    assert keras.specifier.contains(importlib.metadata.version("keras"))


def test_the_distribution_name_is_not_the_unrelated_pypi_project():
    assert _setup_arguments()["name"] != "breakhis-gradcam"
