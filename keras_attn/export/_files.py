"""Atomic output: build an artifact under a temporary name beside its target, then rename it.

A failed export (bad model, converter error, interrupt) leaves neither a half-written file nor a
temporary one behind, and an existing artifact at the target stays intact until the new one is
complete. Missing parent folders are created, as `tf.saved_model.save` does, and removed again
if the export fails.

The temporary folder, `.<name>.<pid>.<random>.partial` beside the target, also holds the
writer's own scratch files (Keras' intermediate SavedModel for a LiteRT conversion), so a killed
export leaves one folder there and nothing in the system's temporary directory; the next export
of the same target removes it once its process is gone.
"""

import contextlib
import errno
import os
import re
import shutil
import tempfile


def check_target(path, argument="path", kind="file"):
    """Returns `path` as an absolute `str` after checking that it can be written.

    Args:
        path: the target, a `str` or `os.PathLike`.
        argument: the argument's name, for errors.
        kind: `"file"` (an existing folder there is refused) or `"folder"`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a str or os.PathLike; got {type(path).__name__}.")
    given = os.fspath(path)
    path = os.path.abspath(given)
    if kind == "file" and os.path.isdir(path):
        raise IsADirectoryError(
            errno.EISDIR,
            f"`{argument}` must be a file to write, but {given!r} is an existing folder; "
            "pass a file path inside it",
            path,
        )
    folder = os.path.dirname(path)
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(
            errno.ENOTDIR,
            f"`{argument}`: cannot create a folder for {given!r}: {folder!r} is a file",
            folder,
        )
    return path


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(path):
    """Removes the temporary folders that earlier, interrupted exports to `path` left beside it
    (those whose process no longer runs)."""
    folder, name = os.path.split(path)
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:(\d+)\.)?[A-Za-z0-9_]+\.partial")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match and not (match.group(1) and _process_alive(int(match.group(1)))):
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


@contextlib.contextmanager
def _scratch_files_in(folder):
    """Points Python's `tempfile` (which Keras' and TensorFlow's exporters use) at `folder`."""
    previous = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield
    finally:
        tempfile.tempdir = previous


@contextlib.contextmanager
def atomic_output(path, suffix=""):
    """Yields a temporary path in `path`'s folder; on success renames it to `path`.

    Creates `path`'s missing parent folders (and removes them again if the body fails), and
    removes the leftovers of interrupted exports to the same `path` first.

    Args:
        path: the final absolute path (file or folder), as `check_target` returns it.
        suffix: ending of the temporary name (some writers insist on one, e.g. ".tflite").
    """
    folder, name = os.path.split(path)
    created = []
    parent = folder
    while not os.path.isdir(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    os.makedirs(folder, exist_ok=True)
    remove_stale_partials(path)
    tmp_dir = tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".partial", dir=folder)
    tmp_path = os.path.join(tmp_dir, name + suffix)
    done = False
    try:
        with _scratch_files_in(tmp_dir):
            yield tmp_path
        if os.path.isdir(tmp_path) and os.path.lexists(path):
            # os.replace cannot swap a folder over a non-empty one: move the old one aside first.
            old = os.path.join(tmp_dir, "previous")
            os.replace(path, old)
        os.replace(tmp_path, path)
        done = True
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not done:
            for created_folder in created:  # innermost first; only if still empty
                with contextlib.suppress(OSError):
                    os.rmdir(created_folder)
