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
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Sequence

from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems

from model.image.naming import printable_path

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_MB = 256
"""Default cap on one image file's size: far above any histology tile (a 700 x 460 BreakHis PNG
is about 0.5 MB, an uncompressed 8-bit RGB tile of 8000 x 8000 pixels 192 MB), and low enough
that a file that is not a tile fails fast instead of filling memory."""

MEBIBYTE = 2**20
DEFAULT_MAX_BYTES = DEFAULT_MAX_FILE_MB * MEBIBYTE


class NotARegularFileError(OSError):
    """The path is a FIFO, a device, a socket or a folder: not read, since reading could hang."""


class FileTooLargeError(OSError):
    """The file is larger than the read cap."""


class UnwritableFolderError(OSError):
    """An output folder that cannot be created or written; the message says why."""


WRITE_CHECK_PREFIX = ".write-check-"  # the probe file of check_writable_folder


def check_writable_folder(folder: str) -> None:
    """Create a local folder if needed and prove a file can be written and deleted there.

    Raises UnwritableFolderError with a reason that reads after the folder's name.
    """
    if not is_remote(folder):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UnwritableFolderError("is a file, not a folder")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise UnwritableFolderError(f"cannot be created: {error}") from error
    probe = join(folder, f"{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"")
        delete([probe])
    except Exception as error:  # permission, missing bucket, read-only filesystem, ...
        raise UnwritableFolderError(f"is not writable: {error}") from error


def is_remote(path: str) -> bool:
    """Whether the path is on a remote filesystem (e.g. `gs://`)."""
    return "://" in path and not path.startswith("file://")


def folder_key(path: str) -> str:
    """A folder's path in one spelling, for comparing folders: remote without a trailing "/",
    local absolute with symbolic links resolved."""
    if is_remote(path):
        return path.rstrip("/")
    return os.path.realpath(path)


def folders_overlap(first: str, second: str) -> bool:
    """Whether two folders are the same, or one is inside the other."""
    a, b = folder_key(first), folder_key(second)
    if is_remote(a) != is_remote(b):
        return False
    separator = "/" if is_remote(a) else os.sep
    return (
        a == b
        or a.startswith(b.rstrip(separator) + separator)
        or b.startswith(a.rstrip(separator) + separator)
    )


def enclosing_folders(path: str) -> list[str]:
    """The folder and every folder above it, nearest first (for gs://, down to the bucket)."""
    key = folder_key(path)
    if is_remote(key):
        scheme, _, rest = key.partition("://")
        parts = rest.split("/")
        return [f"{scheme}://" + "/".join(parts[:end]) for end in range(len(parts), 0, -1)]
    found = [key]
    while os.path.dirname(found[-1]) != found[-1]:
        found.append(os.path.dirname(found[-1]))
    return found


def join(base: str, *parts: str) -> str:
    """Join path components with the separator of the base path's filesystem."""
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def read_bytes(path: str, max_bytes: int | None = None) -> bytes:
    """The whole content of a file; with max_bytes, only of a regular file of at most that size.

    With a cap, a local path is checked before it is opened: a FIFO (whose open blocks), a
    device such as /dev/zero (which never ends), a socket or a folder raises
    NotARegularFileError, a dangling symbolic link FileNotFoundError, and a file over the cap
    FileTooLargeError. Reads never take more than max_bytes + 1 bytes, so a file that grows
    while it is read fails too. Remote objects are always regular; their size is checked the
    same way while reading.
    """
    if max_bytes is None:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    if is_remote(path):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = handle.read(max_bytes + 1)
    else:
        _check_regular_file(path, max_bytes)
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLargeError(f"file is larger than the {_size_text(max_bytes)} read cap")
    return data


def _check_regular_file(path: str, max_bytes: int) -> None:
    """Raise unless a local path is a regular file (after symlinks) of at most max_bytes."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"dangling symbolic link (its target {os.readlink(path)!r} does not exist)"
            ) from None
        raise
    if not stat.S_ISREG(status.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(status.st_mode), "not a regular file")
        raise NotARegularFileError(f"{kind}, not a regular file; not read")
    if status.st_size > max_bytes:
        raise FileTooLargeError(
            f"file is {_size_text(status.st_size)}, above the {_size_text(max_bytes)} read cap"
        )


_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def _size_text(size: int) -> str:
    return f"{size / MEBIBYTE:,.1f} MiB"


def max_bytes_from_mb(max_file_mb: float) -> int:
    """The read cap in bytes for a --max_file_mb flag value."""
    return int(max_file_mb * MEBIBYTE)


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


def match(pattern: str, limit: int | None = None) -> list[str]:
    """Paths matching a glob (`*`, `?`, and `**` across folders), sorted.

    Beam's glob syntax everywhere (`*` stays within a folder, `**` crosses folders). Locally,
    every entry is listed, including the dangling symbolic links, FIFOs and devices that Beam's
    local listing drops or would hang on, so the caller can report them instead of losing them.
    """
    if is_remote(pattern):
        limits = None if limit is None else [limit]
        results = FileSystems.match([pattern], limits=limits)[0].metadata_list
        return sorted(metadata.path for metadata in results)
    found = sorted(_match_local(pattern))
    return found if limit is None else found[:limit]


def _match_local(pattern: str):
    """Local paths matching a Beam glob, without stat-ing (or opening) any of them."""
    if pattern.endswith(os.sep):
        pattern += "*"
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    if prefix == pattern:  # no glob characters: the path itself, if there is an entry
        if os.path.lexists(pattern) and not os.path.isdir(pattern):
            yield pattern
        return
    regex = re.compile(FileSystem.translate_pattern(pattern))
    root = prefix if prefix.endswith(os.sep) else os.path.dirname(prefix)
    for folder, _, names in os.walk(root or os.curdir):
        for name in names:
            path = os.path.join(folder, name)
            if regex.match(path):
                yield path


def list_files(directory: str) -> list[str]:
    """Every file below a folder, recursively, sorted."""
    if not is_remote(directory):
        found = []
        for root, _, names in os.walk(directory):
            found.extend(os.path.join(root, name) for name in names)
        return sorted(found)
    return match(join(directory, "**"))


def relative_files(folder: str) -> list[str]:
    """Every file below a folder as a '/'-separated path relative to it, sorted; [] when a
    local folder does not exist."""
    if not is_remote(folder) and not os.path.isdir(folder):
        return []
    prefix = join(folder, "")
    return sorted(
        path[len(prefix) :] if is_remote(folder) else _relative(path, folder)
        for path in list_files(folder)
    )


def _relative(path: str, folder: str) -> str:
    """A local path relative to folder, '/'-separated."""
    return os.path.relpath(path, folder).replace(os.sep, "/")


def upload_dir(local_dir: str, remote_dir: str) -> list[str]:
    """Copy every file below local_dir to remote_dir (local or remote), keeping relative paths."""
    copied = []
    for path in list_files(local_dir):
        relative = _relative(path, local_dir)
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
    """Delete files, in order (missing ones are ignored).

    Local files go through os.remove, which removes a link rather than what it points to and
    never removes a folder.
    """
    remote = [path for path in paths if is_remote(path) and exists(path)]
    if remote:
        FileSystems.delete(remote)
    for path in paths:
        if not is_remote(path):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def remove_empty_folders(root: str, is_own: Callable[[str], bool]) -> None:
    """Remove, deepest first, the empty folders below a local root that is_own accepts.

    is_own takes a folder's "/"-separated path relative to root; a folder holding anything
    (someone else's file) stays.
    """
    for folder, _, _ in sorted(os.walk(root), key=lambda item: -len(item[0])):
        relative = os.path.relpath(folder, root).replace(os.sep, "/")
        if relative != "." and is_own(relative) and not os.listdir(folder):
            os.rmdir(folder)


def files_in_words(output_dir: str, paths: Sequence[str], shown: int = 3) -> str:
    """A count and the first few names of files in output_dir, for a one-line message."""
    prefix = join(output_dir, "")
    names = ", ".join(printable_path(path[len(prefix) :]) for path in paths[:shown])
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f"{len(paths)} file{'s' if len(paths) != 1 else ''} ({names}{more})"
