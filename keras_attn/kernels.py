"""NumPy-facing wrappers of the Rust CPU kernels: pooling and gate application for CBAM and BAM.

Every function takes a 4-D float feature map `x` in `data_format` `"channels_last"` (NHWC,
the default) or `"channels_first"` (NCHW), and returns new arrays (`x` is never modified).

Input rules:
- A C-contiguous float32 array is read in place, without a copy.
- Any other float array (float16, float64, non-contiguous views, ...) is converted once to a
  C-contiguous float32 copy; results are float32.
- Integer, boolean, complex and non-numeric arrays raise `TypeError`; a rank other than 4 or a
  zero-size dimension raises `ValueError`.

`threads` is the number of threads (None: every core). Kernels run with the GIL released, so
several Python threads may call them at once. The SIMD instruction set is chosen at run time
(AVX-512, AVX2+FMA, NEON or scalar); the environment variable `KERAS_ATTN_SIMD` forces a lower
one (see `simd_level`).

Example:
>>> x = np.random.rand(2, 56, 56, 64).astype("float32")
>>> mean, max_ = channel_pool(x)
>>> mean.shape, max_.shape
((2, 64), (2, 64))
>>> spatial_pool(x).shape  # [..., 0] is the max over channels, [..., 1] the mean
(2, 56, 56, 2)
"""

import numbers

import numpy as np

from keras_attn import _rust

__all__ = [
    "apply_bam",
    "apply_channel_gate",
    "apply_gates",
    "apply_spatial_gate",
    "channel_pool",
    "simd_level",
    "simd_levels",
    "spatial_pool",
]

DATA_FORMATS = ("channels_last", "channels_first")


def simd_levels():
    """The SIMD levels this CPU supports, lowest first (always starting with "scalar")."""
    return list(_rust.simd_levels())


def simd_level():
    """The level the kernels use: `KERAS_ATTN_SIMD` if set and supported, else the best one.

    An unknown or unsupported `KERAS_ATTN_SIMD` prints a warning and keeps the best level.
    """
    return _rust.simd_level()


#: The most threads a call takes (more is a mistake, and would not fit the native integer).
MAX_THREADS = 4096


def as_float32_map(x, name="x"):
    """Returns `x` as an aligned C-contiguous float32 4-D array (itself when it already is
    one, else a copy)."""
    array = np.asarray(x)
    if array.dtype.kind != "f":
        raise TypeError(
            f"`{name}` must be a floating-point array (float16, float32 or float64); "
            f"got dtype {array.dtype}."
        )
    if array.ndim != 4:
        raise ValueError(
            f"`{name}` must be a 4-D feature map (batch, height, width, channels) or "
            f"(batch, channels, height, width); got shape {array.shape} (rank {array.ndim})."
        )
    if 0 in array.shape:
        raise ValueError(f"`{name}` must have no zero-size dimension; got shape {array.shape}.")
    return np.require(array, np.float32, ["C_CONTIGUOUS", "ALIGNED"])


def check_data_format(data_format):
    if data_format not in DATA_FORMATS:
        raise ValueError(f"`data_format` must be one of {DATA_FORMATS}; got {data_format!r}.")
    return data_format


def check_threads(threads):
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"`threads` must be a positive int or None; got {threads!r}.")
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(
            f"`threads` must be a positive int or None (every core), at most {MAX_THREADS}; "
            f"got {threads}."
        )
    return int(threads)


def _dims(x, data_format):
    """(N, H, W, C) of a map."""
    if data_format == "channels_last":
        return x.shape
    n, c, h, w = x.shape
    return n, h, w, c


def _gate(gate, name, shapes):
    """`gate` as C-contiguous float32 of `shapes[0]`, from any of `shapes` (same values)."""
    array = np.asarray(gate)
    if array.dtype.kind != "f":
        raise TypeError(f"`{name}` must be a floating-point array; got dtype {array.dtype}.")
    if array.shape not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(f"`{name}` must have shape {expected} to match `x`; got {array.shape}.")
    return np.ascontiguousarray(array.reshape(shapes[0]), dtype=np.float32)


def _channel_gate(gate, name, x, data_format):
    n, _, _, c = _dims(x, data_format)
    map_shape = (n, 1, 1, c) if data_format == "channels_last" else (n, c, 1, 1)
    return _gate(gate, name, [(n, c), map_shape])


def _spatial_gate(gate, name, x, data_format):
    n, h, w, _ = _dims(x, data_format)
    map_shape = (n, h, w, 1) if data_format == "channels_last" else (n, 1, h, w)
    return _gate(gate, name, [(n, h, w), map_shape])


def _prepare(x, data_format, threads):
    return as_float32_map(x), check_data_format(data_format), check_threads(threads)


def channel_pool(x, data_format="channels_last", threads=None, *, _simd=None):
    """Mean and max over height and width for every (batch, channel), in one pass over `x`.

    Args:
        x: 4-D float array (see the module docstring for the input rules).
        data_format: `"channels_last"` (NHWC) or `"channels_first"` (NCHW).
        threads: number of threads, None for every core.

    Returns:
        `(mean, max)`, two float32 arrays of shape `(N, C)`. NaN propagates as in NumPy.

    Example:
    >>> mean, max_ = channel_pool(np.ones((1, 4, 4, 3), "float32"))
    >>> mean.tolist(), max_.tolist()
    ([[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]])
    """
    x, data_format, threads = _prepare(x, data_format, threads)
    return _rust.channel_pool(x, data_format, threads, _simd)


def spatial_pool(x, data_format="channels_last", threads=None, *, _simd=None):
    """Max and mean over channels for every (batch, pixel), in one pass over `x`.

    Stacked max first, as `SpatialAttention` stacks them.

    Returns:
        float32 array `(N, H, W, 2)` for channels_last, `(N, 2, H, W)` for channels_first.
    """
    x, data_format, threads = _prepare(x, data_format, threads)
    return _rust.spatial_pool(x, data_format, threads, _simd)


def apply_channel_gate(x, gate, data_format="channels_last", threads=None, *, _simd=None):
    """`x * gate[n, c]`; `gate` of shape `(N, C)`, `(N, 1, 1, C)` (channels_last) or
    `(N, C, 1, 1)` (channels_first)."""
    return _apply_gates(x, ("gate", gate), ("spatial_gate", None), data_format, threads, _simd)


def apply_spatial_gate(x, gate, data_format="channels_last", threads=None, *, _simd=None):
    """`x * gate[n, h, w]`; `gate` of shape `(N, H, W)`, `(N, H, W, 1)` (channels_last) or
    `(N, 1, H, W)` (channels_first)."""
    return _apply_gates(x, ("channel_gate", None), ("gate", gate), data_format, threads, _simd)


def apply_gates(
    x, channel_gate=None, spatial_gate=None, data_format="channels_last", threads=None, *, _simd=None
):
    """`(x * channel_gate[n, c]) * spatial_gate[n, h, w]` in one read and one write of `x`
    (CBAM's two gates at once); either gate may be None."""
    return _apply_gates(
        x, ("channel_gate", channel_gate), ("spatial_gate", spatial_gate), data_format, threads, _simd
    )


def _apply_gates(x, channel, spatial, data_format, threads, simd):
    """`channel` and `spatial` are (argument name, gate or None)."""
    x, data_format, threads = _prepare(x, data_format, threads)
    (channel_name, channel_gate), (spatial_name, spatial_gate) = channel, spatial
    if channel_gate is not None:
        channel_gate = _channel_gate(channel_gate, channel_name, x, data_format)
    if spatial_gate is not None:
        spatial_gate = _spatial_gate(spatial_gate, spatial_name, x, data_format)
    return _rust.apply_gates(x, data_format, channel_gate, spatial_gate, threads, simd)


def apply_bam(
    x,
    channel_logits,
    spatial_logits,
    fusion="sum",
    data_format="channels_last",
    threads=None,
    *,
    _simd=None,
):
    """BAM's `x * (1 + sigmoid(fuse(channel_logits[n, c], spatial_logits[n, h, w])))`, with
    `fuse` the sum (`fusion="sum"`, the paper) or the product (`"product"`, the authors' code),
    in one read and one write of `x`."""
    x, data_format, threads = _prepare(x, data_format, threads)
    if fusion not in ("sum", "product"):
        raise ValueError(f"`fusion` must be 'sum' or 'product'; got {fusion!r}.")
    channel_logits = _channel_gate(channel_logits, "channel_logits", x, data_format)
    spatial_logits = _spatial_gate(spatial_logits, "spatial_logits", x, data_format)
    return _rust.apply_bam(
        x, data_format, channel_logits, spatial_logits, fusion, threads, _simd
    )
