"""Spatial and channel pooling in `keras.ops`, shared by the gates.

Callers pass float32 (see `_base.upcast`) so that the sums of large feature maps cannot overflow.
"""

from keras import ops

POOL_TYPES = ("avg", "max", "lp", "lse")


def check_pool_types(pool_types):
    """Returns `pool_types` as a tuple of known, distinct names (a single string is one pool
    type)."""
    if isinstance(pool_types, str):
        pool_types = (pool_types,)
    try:
        pool_types = tuple(pool_types)
    except TypeError:
        raise ValueError(
            f"`pool_types` must be a pool name or a sequence of names from {POOL_TYPES}; "
            f"got {pool_types!r}."
        ) from None
    if not pool_types:
        raise ValueError(f"`pool_types` must name at least one of {POOL_TYPES}; got ().")
    unknown = [p for p in pool_types if p not in POOL_TYPES]
    if unknown:
        raise ValueError(
            f"`pool_types` entries must be in {POOL_TYPES}; got {pool_types} "
            f"(unknown: {tuple(unknown)})."
        )
    # One rule for the layer and for `keras_attn.cpu.compile`: a repeated pool would only
    # double its branch's weight in the shared MLP's sum, which is never what was meant.
    repeated = sorted({p for p in pool_types if pool_types.count(p) > 1})
    if repeated:
        raise ValueError(
            f"`pool_types` must name each pool type at most once; got {pool_types} "
            f"(repeated: {tuple(repeated)})."
        )
    return pool_types


def spatial_axes(data_format, rank):
    """The spatial axes of a map of `rank` (3: length; 4: height, width; 5: depth, height,
    width)."""
    if data_format == "channels_last":
        return tuple(range(1, rank - 1))
    return tuple(range(2, rank))


def channel_axis(data_format):
    """The channel axis of a map: -1 for channels_last, 1 for channels_first."""
    return -1 if data_format == "channels_last" else 1


def spatial_pool(x, pool_type, data_format):
    """Pools a map over every spatial axis into an (N, C) descriptor.

    "lp" is the L2 norm `sqrt(sum(x**2))`, what the authors' `F.lp_pool2d(x, 2, (H, W))` computes;
    "lse" is the log-sum-exp `m + log(sum(exp(x - m)))` with `m` the maximum, stable for any input.
    """
    axes = spatial_axes(data_format, len(x.shape))
    if pool_type == "avg":
        return ops.mean(x, axis=axes)
    if pool_type == "max":
        return ops.max(x, axis=axes)
    if pool_type == "lp":
        return ops.sqrt(ops.sum(ops.square(x), axis=axes))
    if pool_type == "lse":
        # Written out rather than ops.logsumexp: TF's version adds an is_finite guard that TFLite
        # lacks. The max needs no gradient: its derivative cancels exactly.
        peak = ops.stop_gradient(ops.max(x, axis=axes, keepdims=True))
        lse = peak + ops.log(ops.sum(ops.exp(x - peak), axis=axes, keepdims=True))
        return ops.squeeze(lse, axis=axes)
    raise ValueError(f"`pool_type` must be one of {POOL_TYPES}; got {pool_type!r}.")


def channel_pool(x, data_format):
    """Stacks the max and the mean over channels, in that order (the authors' `ChannelPool`)."""
    axis = channel_axis(data_format)
    return ops.concatenate(
        [ops.max(x, axis=axis, keepdims=True), ops.mean(x, axis=axis, keepdims=True)], axis=axis
    )


def as_channel_map(vector, data_format, rank):
    """Reshapes an (N, C) vector to a map of `rank` with size-1 spatial axes: (N, 1, 1, C) or
    (N, C, 1, 1) for rank 4, to broadcast over the map."""
    for axis in spatial_axes(data_format, rank):
        vector = ops.expand_dims(vector, axis)
    return vector
