"""Atomic output: build an artifact under a temporary name beside its target, then rename it.

A failed export (bad model, converter error, interrupt) leaves neither a half-written file nor a
temporary one behind, and an existing artifact at the target stays intact until the new one is
complete.
"""

import contextlib
import os
import shutil
import tempfile


def check_target(path, argument="path"):
    """Returns `path` as an absolute `str` after checking that its folder exists."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a str or os.PathLike; got {type(path).__name__}.")
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ValueError(
            f"`{argument}`: the folder {folder!r} does not exist; create it first "
            f"(got {os.fspath(path)!r})."
        )
    return path


@contextlib.contextmanager
def atomic_output(path, suffix=""):
    """Yields a temporary path in `path`'s folder; on success renames it to `path`.

    Args:
        path: the final absolute path (file or folder).
        suffix: ending of the temporary name (some writers insist on one, e.g. ".tflite").
    """
    folder, name = os.path.split(path)
    tmp_dir = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=folder)
    tmp_path = os.path.join(tmp_dir, name + suffix)
    try:
        yield tmp_path
        if os.path.isdir(tmp_path) and os.path.lexists(path):
            # os.replace cannot swap a folder over a non-empty one: move the old one aside first.
            old = os.path.join(tmp_dir, "previous")
            os.replace(path, old)
        os.replace(tmp_path, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)

