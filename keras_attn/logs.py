"""Keeps TensorFlow's, absl's and LiteRT's C++ log lines off the terminal.

TensorFlow prints a dozen lines when it is imported (oneDNN, CPU features, "failed call to
cuInit" on a machine without a GPU, ...) and more for every conversion; LiteRT prints its
accelerator search ("NPU accelerator could not be loaded", ...) for every compiled model. They
are informational, but read like failures. Most cannot be turned off by a setting: TensorFlow
writes its start-up lines before absl's logging reads `TF_CPP_MIN_LOG_LEVEL`, and LiteRT's C
library has no log level. So `quiet()` passes the process's native standard error through a
small filter process that drops the lines in those log formats (fatal ones excepted) and lets
everything else through: Python's own output, tracebacks, warnings, crash reports.

`keras-attn` and the examples call it unless given `--verbose`; call it yourself at the top of a
script, before TensorFlow is imported:

>>> import keras_attn.logs  # doctest: +SKIP
>>> keras_attn.logs.quiet()  # doctest: +SKIP
>>> import tensorflow as tf  # doctest: +SKIP
"""

import io
import logging
import os
import re
import signal
import sys

__all__ = ["is_native_log_line", "quiet"]

_NATIVE_LOG = re.compile(
    rb"(?:"
    rb"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-/]+:\d+\] "  # absl / glog, below FATAL
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: "  # second line of TensorFlow's CPU notice
    rb"|(?:INFO|WARNING|VERBOSE): "  # LiteRT and TFLite, below ERROR
    rb"|fully_quantize: \d+, inference_type: "  # the converter's quantizer
    rb")"
)
_installed = False


def is_native_log_line(line):
    """Whether `line` (bytes) is one of the informational C++ log lines `quiet()` drops."""
    return _NATIVE_LOG.match(line) is not None


def _filter(read_fd, write_fd):
    """Copies lines from `read_fd` to `write_fd`, without the native log lines, until EOF."""
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_native_log_line(line))
        if kept:
            os.write(write_fd, kept)
    if pending and not is_native_log_line(pending):
        os.write(write_fd, pending)


def quiet(verbose=False):
    """Drops TensorFlow's, absl's and LiteRT's informational C++ log lines from this process's
    standard error (and its child processes'), and TensorFlow's and absl's Python warnings.

    Does nothing when `verbose` is true. The C++ lines stay when the user set
    `TF_CPP_MIN_LOG_LEVEL` (their own level stands) and on a platform without `os.fork`; a
    second call changes nothing. Call it before TensorFlow is imported: only what is written
    afterwards is filtered.

    Args:
        verbose: show everything (for the `--verbose` flags).

    Returns:
        True if the filter is on after the call.
    """
    global _installed
    if verbose:
        return _installed
    for name in ("tensorflow", "absl"):  # Python-side notes (e.g. retracing warnings)
        logging.getLogger(name).setLevel(logging.ERROR)
    # Keras sets TF_CPP_MIN_LOG_LEVEL itself when imported: only a value set before is the user's.
    users_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ and not {"keras", "tensorflow"} & set(
        sys.modules
    )
    if _installed or users_level or not hasattr(os, "fork"):
        return _installed
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what TensorFlow reads: no INFO, WARNING
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # the filter: lives until every writer of the pipe is gone
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: keep draining to the end
            os.close(write_fd)
            _filter(read_fd, 2)
        finally:
            os._exit(0)
    os.close(read_fd)
    # Python's own stderr bypasses the filter (no delay for progress bars); fd 2, which the
    # C++ libraries and child processes write to, goes through it.
    terminal = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(terminal, "w"),
        encoding=sys.stderr.encoding,
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    _installed = True
    return True
