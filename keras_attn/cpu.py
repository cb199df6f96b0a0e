"""Fused CPU inference of whole attention blocks in Rust: `keras_attn.cpu.compile(layer)`.

`compile` copies a built layer's weights out once, folds every BatchNormalization (inference
statistics) into the convolution or dense layer before it, and returns a callable that runs the
whole block in Rust on NumPy arrays: pooling, the small MLP, the convolutions, the sigmoids and
the scaling, reading the feature map as few times as possible (CBAM: one read to pool the
channels, one to pool the channel-scaled map over C without writing it, one read and one write
to apply both gates). No TensorFlow or Keras runs at call time.

Supported layers: `ChannelAttention` (pool types "avg" and/or "max"), `SpatialAttention`,
`CBAM`, `BAM` and `SqueezeExcite`. Computation is float32 whatever the layer's dtype policy.
Layers built for 2D maps (4-D inputs) all compile; for 1D and 3D maps (3-D and 5-D inputs) the
channel gates compile (`ChannelAttention`, `SqueezeExcite`, `CBAM(spatial=False)`): they pool
over every spatial axis, so the map runs as a 2D map of its flattened positions. Blocks with a
spatial convolution refuse 1D and 3D layers.

NaN and infinity propagate as in the Keras layer: a NaN or an infinity in the map or in the
channel MLP's weights gives the same non-finite outputs (mean and max pooling, the ReLUs and the
sigmoids keep NaN). One known difference: a non-finite weight in a spatial convolution's kernel
meets the zero padding here, where TensorFlow skips the padded taps.

Example:
>>> layer = keras_attn.CBAM(reduction_ratio=8)
>>> x = np.random.rand(1, 56, 56, 64).astype("float32")
>>> _ = layer(x)                     # build it (or train it, or load it)
>>> run = keras_attn.cpu.compile(layer)
>>> np.allclose(run(x), layer(x, training=False), atol=1e-5)
True
"""

import math

import numpy as np

from keras_attn import _rust
from keras_attn.kernels import as_float32_map, check_threads

__all__ = ["CompiledBlock", "compile"]


class CompiledBlock:
    """A built attention layer compiled to Rust: call it on a 4-D float NumPy array.

    Thread-safe: the compiled weights are read-only, and calls run with the GIL released, so
    several threads may call one instance at once (each call gets its own output).

    Args (of the call):
        x: float array of the layer's input rank (4-D for 2D maps) in its `data_format`, with
            the layer's channel count. A C-contiguous float32 array is read without a copy;
            other float arrays are converted once.
        threads: number of threads, None for the value given to `compile` (default: every core).

    Returns:
        A new float32 array, the block's output (as the layer in inference mode).
    """

    def __init__(self, block, data_format, threads, name, rank=4):
        self._block = block
        self.data_format = data_format
        self.threads = threads
        self.name = name
        self.rank = rank

    @property
    def channels(self):
        """The channel count the layer was built for."""
        return self._block.channels

    def __call__(self, x, threads=None, *, _simd=None):
        shape = None
        if self.rank != 4:
            x, shape = self._as_2d_map(x)
        x = as_float32_map(x)
        axis = -1 if self.data_format == "channels_last" else 1
        if x.shape[axis] != self.channels:
            raise ValueError(
                f"`x` must have {self.channels} channels (what {self.name} was built for) on "
                f"axis {axis} ({self.data_format}); got shape {shape or x.shape}."
            )
        threads = check_threads(threads) if threads is not None else self.threads
        y = self._block(x, self.data_format, threads, _simd)
        return y if shape is None else y.reshape(shape)

    def _as_2d_map(self, x):
        """A 1D or 3D map as the 2D map (N, 1, positions, C) or (N, C, 1, positions) that a
        channel gate treats the same, and the original shape."""
        array = np.asarray(x)
        if array.ndim != self.rank:
            raise ValueError(
                f"`x` must be a {self.rank}-D map (what {self.name} was built for); got shape "
                f"{array.shape} (rank {array.ndim})."
            )
        if self.data_format == "channels_last":
            n, *spatial, channels = array.shape
            return array.reshape(n, 1, math.prod(spatial), channels), array.shape
        n, channels, *spatial = array.shape
        return array.reshape(n, channels, 1, math.prod(spatial)), array.shape

    def __repr__(self):
        return f"CompiledBlock({self.name}, channels={self.channels}, {self.data_format})"


def compile(layer, threads=None):  # noqa: A001 - the public API name
    """Compiles a built attention layer to a fused Rust forward pass.

    Args:
        layer: a built `ChannelAttention`, `SpatialAttention`, `CBAM`, `BAM` or `SqueezeExcite`.
        threads: default thread count of the returned callable (None: every core).

    Returns:
        A `CompiledBlock`: `f(x) -> y` on NumPy arrays, matching the layer in inference mode.

    Raises:
        TypeError: for another kind of layer.
        ValueError: for a layer that is not built yet, or an option the Rust path lacks
            (ChannelAttention pool types other than "avg" and "max"; a spatial gate built for
            1D or 3D maps).
    """
    from keras_attn import layers

    compilers = (
        (layers.CBAM, _cbam),
        (layers.ChannelAttention, lambda l: _rust.Block.cbam(_channels(l), **_channel_gate(l))),
        (layers.SpatialAttention, lambda l: _rust.Block.cbam(_channels(l), **_spatial_gate(l))),
        (layers.BAM, _bam),
        (layers.SqueezeExcite, _squeeze_excite),
    )
    for kind, build in compilers:
        if isinstance(layer, kind):
            if not layer.built:
                raise ValueError(
                    f"keras_attn.cpu.compile needs a built layer; {layer.name} is not built yet "
                    "(call it on an input or call `layer.build(input_shape)` first)."
                )
            rank = _check_rank(layer)
            return CompiledBlock(
                build(layer), layer.data_format, check_threads(threads), layer.name, rank
            )
    supported = ", ".join(kind.__name__ for kind, _ in compilers)
    raise TypeError(
        f"keras_attn.cpu.compile supports {supported}; got {type(layer).__name__}."
    )


def _check_rank(layer):
    """The layer's input rank; only channel gates run on 1D and 3D maps."""
    from keras_attn import layers

    rank = layer.input_spec.ndim
    channel_only = isinstance(layer, (layers.ChannelAttention, layers.SqueezeExcite)) or (
        isinstance(layer, layers.CBAM) and layer.spatial_attention is None
    )
    if rank != 4 and not channel_only:
        raise ValueError(
            f"keras_attn.cpu.compile runs {type(layer).__name__} on 2D maps (4-D inputs) only; "
            f"{layer.name} was built for {rank}-D inputs. On 1D and 3D maps it compiles "
            "ChannelAttention, SqueezeExcite and CBAM(spatial=False)."
        )
    return rank


def _numpy(variable):
    return np.asarray(variable, dtype=np.float64)


def _channels(layer):
    return int(layer.input_spec.axes[layer.channel_axis])


def _fold_batchnorm(kernel, bias, bn):
    """Merges an inference-mode BatchNormalization over the last axis into the preceding layer:
    returns float32 `(kernel * s, (bias - mean) * s + beta)` with `s = gamma / sqrt(var + eps)`."""
    if bn is None:
        return kernel.astype(np.float32), bias.astype(np.float32)
    gamma = _numpy(bn.gamma) if bn.scale else 1.0
    beta = _numpy(bn.beta) if bn.center else 0.0
    scale = gamma / np.sqrt(_numpy(bn.moving_variance) + bn.epsilon)
    folded_bias = (bias - _numpy(bn.moving_mean)) * scale + beta
    return (kernel * scale).astype(np.float32), np.asarray(folded_bias, dtype=np.float32)


def _dense(dense, bn=None):
    bias = _numpy(dense.bias) if dense.use_bias else np.zeros(dense.units)
    return _fold_batchnorm(_numpy(dense.kernel), bias, bn)


def _conv(conv, bn=None):
    bias = _numpy(conv.bias) if conv.use_bias else np.zeros(conv.filters)
    return _fold_batchnorm(_numpy(conv.kernel), bias, bn)


def _channel_gate(layer):
    """The `Block.cbam` arguments of a ChannelAttention."""
    # Imported here: importing `keras_attn.cpu` (as `keras_attn.edge` does) must not import Keras.
    from keras_attn.layers._pooling import check_pool_types

    pools = check_pool_types(layer.pool_types)
    if not set(pools) <= {"avg", "max"}:
        raise ValueError(
            "keras_attn.cpu.compile supports ChannelAttention pool_types made of 'avg' and 'max'; "
            f"{layer.name} has {pools}."
        )
    hidden_kernel, hidden_bias = _dense(layer.mlp_hidden)
    output_kernel, output_bias = _dense(layer.mlp_output)
    return dict(
        hidden_kernel=hidden_kernel,
        hidden_bias=hidden_bias,
        output_kernel=output_kernel,
        output_bias=output_bias,
        pool_avg="avg" in pools,
        pool_max="max" in pools,
    )


def _spatial_gate(layer):
    """The `Block.cbam` arguments of a SpatialAttention."""
    kernel, bias = _conv(layer.conv, layer.bn)
    return dict(conv_kernel=kernel, conv_bias=float(bias[0]))


def _cbam(layer):
    arguments = _channel_gate(layer.channel_attention)
    if layer.spatial_attention is not None:
        arguments.update(_spatial_gate(layer.spatial_attention))
    return _rust.Block.cbam(_channels(layer), **arguments)


def _squeeze_excite(layer):
    reduce_kernel, reduce_bias = _dense(layer.reduce)
    expand_kernel, expand_bias = _dense(layer.expand)
    return _rust.Block.squeeze_excite(reduce_kernel, reduce_bias, expand_kernel, expand_bias)


def _bam(layer):
    channel, spatial = layer.channel_gate, layer.spatial_gate
    dense = [_dense(d, bn) for d, bn in zip(channel.hidden_dense, channel.hidden_bn)]
    dense.append(_dense(channel.output_dense))
    convs = [_conv(spatial.reduce_conv, spatial.reduce_bn)]
    convs += [_conv(c, bn) for c, bn in zip(spatial.dilated_convs, spatial.dilated_bns)]
    convs.append(_conv(spatial.output_conv))
    return _rust.Block.bam(
        [k for k, _ in dense],
        [b for _, b in dense],
        [k for k, _ in convs],
        [b for _, b in convs],
        int(spatial.dilation_rate),
        layer.fusion,
    )
