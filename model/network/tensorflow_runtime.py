"""TensorFlow's native start-up lines (oneDNN, CUDA, CPU features) kept off the terminal.

TensorFlow 2.21 writes its start-up lines through Abseil before Abseil's logging is set up, so
`TF_CPP_MIN_LOG_LEVEL` alone hides only some of them (the CPU-feature lines). Both jobs
therefore load TensorFlow in one place, `load_tensorflow`, which, unless the run is verbose,
points the process's native stderr at /dev/null while TensorFlow is imported and finds its
devices, the two moments those lines are written. The scorer's modules keep TensorFlow out of
their imports and call this first, so a worker process is quiet whichever step it runs first;
the training entry point calls it before importing the training library.

Each entry point records the choice in TF_CPP_MIN_LOG_LEVEL (0 verbose, 2 quiet) with
`set_verbosity` before TensorFlow loads; Beam worker processes inherit it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
_QUIET_LEVEL = "2"  # hide TensorFlow's C++ info and warning lines; errors still show
_VERBOSE_LEVEL = "0"

_LOCK = threading.Lock()
_loaded = False


def set_verbosity(verbose: bool) -> None:
    """Choose, before TensorFlow is imported, whether its native start-up lines are shown."""
    os.environ[LOG_LEVEL_VARIABLE] = _VERBOSE_LEVEL if verbose else _QUIET_LEVEL


def is_quiet() -> bool:
    """Whether this process should hide TensorFlow's start-up lines (TF_CPP_MIN_LOG_LEVEL >= 1)."""
    level = os.environ.get(LOG_LEVEL_VARIABLE, "0").strip()
    return level.isdigit() and int(level) >= 1


@contextlib.contextmanager
def _native_stderr_hidden():
    """Point file descriptor 2 at /dev/null for the block; Python's own stderr is flushed first.

    Lines other threads log in the meantime are lost too, which is why the block is kept to
    TensorFlow's import and device discovery (a second or two, once per process).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_tensorflow() -> None:
    """Import TensorFlow and discover its devices once per process, quietly unless verbose."""
    global _loaded
    with _LOCK:
        if _loaded:
            return
        hidden = _native_stderr_hidden() if is_quiet() else contextlib.nullcontext()
        with hidden:
            import tensorflow as tf

            tf.config.list_physical_devices()
        _loaded = True
