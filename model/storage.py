"""All reads and writes of both jobs, local or `gs://`, through Beam's `FileSystems`.

TensorFlow's own `gs://` client cannot be pointed at a storage emulator, while Beam's GCS
filesystem (google-cloud-storage underneath) follows `STORAGE_EMULATOR_HOST`. Keeping every
remote access here means the cloud path is exercised by the same tests as the local one;
TensorFlow only ever sees local files, staged by `download_dir` / `upload_dir`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

logger = logging.getLogger(__name__)

EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"


def use_anonymous_credentials_for_emulator() -> None:
    """With a storage emulator, skip Beam's credential lookup (and its retries) up front.

    Beam looks for Google application default credentials with exponential-backoff retries,
    half a minute per process when there are none, before it connects anonymously; an
    emulator accepts anonymous requests, so with `STORAGE_EMULATOR_HOST` set we go straight
    to anonymous. Called on import, so Beam worker processes that import this module do too.
    """
    if not os.environ.get(EMULATOR_VARIABLE):
        return
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials_init = True
        auth._Credentials._credentials = None


use_anonymous_credentials_for_emulator()


def is_remote(path: str) -> bool:
    """Whether the path is on a remote filesystem (e.g. `gs://`)."""
    return "://" in path and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join path components with the separator of the base path's filesystem."""
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def read_bytes(path: str) -> bytes:
    """The whole content of a file."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def read_text(path: str) -> str:
    """The content of a UTF-8 text file."""
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write a file, creating local parent folders as needed."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)


def write_text(path: str, text: str) -> None:
    """Write a UTF-8 text file."""
    write_bytes(path, text.encode("utf-8"))


def exists(path: str) -> bool:
    """Whether a file exists."""
    return FileSystems.exists(path)


def match(pattern: str) -> list[str]:
    """Paths matching a glob (`*`, `?`, and `**` across folders), sorted."""
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(metadata.path for metadata in results)


def list_files(directory: str) -> list[str]:
    """Every file below a folder, recursively, sorted."""
    if not is_remote(directory):
        found = []
        for root, _, names in os.walk(directory):
            found.extend(os.path.join(root, name) for name in names)
        return sorted(found)
    return match(join(directory, "**"))


def download_dir(remote_dir: str, local_dir: str) -> list[str]:
    """Copy every file below remote_dir into local_dir, keeping relative paths."""
    prefix = remote_dir.rstrip("/") + "/"
    copied = []
    for path in list_files(remote_dir):
        relative = (
            path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, remote_dir)
        )
        target = os.path.join(local_dir, *relative.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(read_bytes(path))
        copied.append(target)
    return copied


def upload_dir(local_dir: str, remote_dir: str) -> list[str]:
    """Copy every file below local_dir to remote_dir (local or remote), keeping relative paths."""
    copied = []
    for path in list_files(local_dir):
        relative = os.path.relpath(path, local_dir).replace(os.sep, "/")
        target = join(remote_dir, *relative.split("/"))
        if not is_remote(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
        else:
            with open(path, "rb") as handle:
                write_bytes(target, handle.read())
        copied.append(target)
    logger.debug("Copied %d files from %s to %s", len(copied), local_dir, remote_dir)
    return copied


def delete(paths: list[str]) -> None:
    """Delete files (missing ones are ignored)."""
    existing = [path for path in paths if exists(path)]
    if existing:
        FileSystems.delete(existing)
