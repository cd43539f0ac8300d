"""Shared test setup: quiet TensorFlow, the real BreakHis sample location."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real sample: $BREAKHIS_SAMPLE, else beside the repository (scripts/upgrade_deps.sh tests a
# copy of the tree elsewhere and points here).
BREAKHIS_SAMPLE = pathlib.Path(
    os.environ.get("BREAKHIS_SAMPLE") or REPO_ROOT.parent / "shared" / "breakhis-sample"
)
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reads the real sample (through its fixture) is in the slow tier."""
    for item in items:
        if "breakhis_sample" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def breakhis_sample() -> pathlib.Path:
    """The real 345-image BreakHis sample beside the repository; skips the test when absent."""
    if not BREAKHIS_SAMPLE.is_dir():
        pytest.skip(f"real BreakHis sample not found at {BREAKHIS_SAMPLE}")
    return BREAKHIS_SAMPLE


@pytest.fixture(scope="session")
def gcs_emulator():
    """A gcp-storage-emulator on 127.0.0.1 with bucket `test-bucket`; yields the bucket URL.

    Sets STORAGE_EMULATOR_HOST for this process and the Beam worker processes it starts.
    """
    import socket

    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="test-bucket")
    server.start()
    previous = os.environ.get(EMULATOR_VARIABLE)
    os.environ[EMULATOR_VARIABLE] = f"http://127.0.0.1:{port}"
    _use_anonymous_credentials()
    try:
        yield "gs://test-bucket"
    finally:
        server.stop()
        if previous is None:
            os.environ.pop(EMULATOR_VARIABLE, None)
        else:
            os.environ[EMULATOR_VARIABLE] = previous


def _use_anonymous_credentials() -> None:
    """Skip Beam's Google credential lookup (and its retries) for the emulator.

    Without credentials, Beam retries the lookup with exponential backoff for half a minute per
    process before it connects anonymously; the emulator accepts anonymous requests, so the
    tests go straight to anonymous. This reaches into Beam's private credential cache, which is
    why it lives in the tests and not in the product.
    """
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials_init = True
        auth._Credentials._credentials = None


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> pathlib.Path:
    """A small BreakHis-layout synthetic set: 5 patients per class, 40X and 100X, 96x64 tiles."""
    from model.synthetic_data import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(
        str(root),
        patients_per_class=5,
        images_per_magnification=3,
        magnifications=("40X", "100X"),
        width=96,
        height=64,
        seed=7,
    )
    return root
