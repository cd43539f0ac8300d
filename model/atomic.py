"""Replace a file whole, local or gs://: readers see the old content or the new, never a part."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

from model import storage


def replace_file(path: str, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through `write` (given a binary stream) so that it appears all at once.

    Locally the content goes to a temporary file beside the target, renamed over it; the
    temporary file gets the usual permissions (0666 less the umask), unlike mkstemp's 0600. On
    gs:// an object write is already all or nothing.
    """
    if storage.is_remote(path):
        buffer = io.BytesIO()
        write(buffer)
        storage.write_bytes(path, buffer.getvalue())
        return
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f"{temporary_prefix(name)}{uuid.uuid4().hex}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        os.remove(temporary)
        raise


def temporary_prefix(name: str) -> str:
    """How the temporary files of `replace_file` for `name` begin (a kill may leave one)."""
    return f".{name}."
