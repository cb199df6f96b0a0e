"""ECA: efficient channel attention (ECA-Net)."""

import math
import numbers

import keras
from keras import ops

from keras_attn.layers._base import (
    AttentionLayer,
    check_odd_kernel_size,
    check_positive_number,
    upcast,
)
from keras_attn.layers._pooling import as_channel_map, spatial_pool


def eca_kernel_size(channels, gamma=2, b=1):
    """ECA-Net's adaptive kernel size: `|(log2(C) + b) / gamma|` truncated, made odd upwards."""
    size = int(abs((math.log2(channels) + b) / gamma))
    return size if size % 2 else size + 1


@keras.saving.register_keras_serializable(package="keras_attn")
class ECA(AttentionLayer):
    """Efficient channel attention.

    Global average pooling, then a 1-D convolution without bias across the pooled channel vector
    (so each channel's gate sees its `k` neighbours), sigmoid, and the per-channel scale. The kernel
    size `k` adapts to the channel count C as in the paper unless `kernel_size` is given.

    Args:
        kernel_size: None (default: adaptive, see `eca_kernel_size`) or a positive odd int.
        gamma: positive number, the adaptive rule's divisor. Default 2.
        b: number, the adaptive rule's offset. Default 1.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of the 1-D kernel. Default `"glorot_uniform"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Attributes (after build): `conv`, the `Conv1D(1, k)` over the channel vector.

    Call arguments:
        inputs: the feature map (rank 3, 4 or 5).
        training: unused; accepted like every attention layer.
        return_attention_scores: if True, also return the gate, shape `(N, 1, 1, C)`
            (`(N, C, 1, 1)` for channels_first).

    Input shape:
        4-D tensor `(batch, height, width, channels)` (channels_last) or
        `(batch, channels, height, width)` (channels_first); also 3-D `(batch, length, channels)`
        and 5-D `(batch, depth, height, width, channels)` (channels first: after the batch), the
        rank taken at build. Spatial sizes may be unknown. Integer and boolean inputs are cast to
        the layer's compute dtype (float32 by default), as Keras' Dense does; an empty batch
        gives an empty output. The shapes written above are for 4-D inputs; at ranks 3 and 5
        the spatial axes are those of the input.

    Output shape:
        Same as the input.

    Example:

    >>> x = np.random.rand(2, 8, 8, 64).astype("float32")
    >>> layer = ECA()
    >>> layer(x).shape, layer.conv.kernel_size
    ((2, 8, 8, 64), (3,))

    Reference:
        Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
        Networks", CVPR 2020.
    """

    def __init__(
        self,
        kernel_size=None,
        gamma=2,
        b=1,
        data_format=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        if kernel_size is not None:
            kernel_size = check_odd_kernel_size("kernel_size", kernel_size)
        self.kernel_size = kernel_size
        self.gamma = check_positive_number("gamma", gamma)
        if not isinstance(b, numbers.Real) or isinstance(b, bool):
            raise ValueError(f"`b` must be a number; got {b!r}.")
        self.b = b
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        size = self.kernel_size or eca_kernel_size(channels, self.gamma, self.b)
        self.conv = keras.layers.Conv1D(
            1,
            size,
            padding="same",
            use_bias=False,
            dtype=self._gate_dtype(),
            name="conv",
            **self._initializers(bias=False),
        )
        # The pooled channel vector is a length-C sequence of one feature.
        self.conv.build((None, channels, 1))

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        pooled = spatial_pool(upcast(inputs), "avg", self.data_format)
        logits = ops.squeeze(self.conv(ops.expand_dims(pooled, -1)), -1)
        gate = as_channel_map(ops.sigmoid(logits), self.data_format, len(inputs.shape))
        return self._apply_gate(inputs, gate, return_attention_scores)

    def compute_attention_scores_shape(self, input_shape):
        return self._channel_map_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            gamma=self.gamma,
            b=self.b,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
