"""ChannelAttention: the channel gate of CBAM."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer, check_positive_int, upcast
from keras_attn.layers._pooling import as_channel_map, check_pool_types, spatial_pool


@keras.saving.register_keras_serializable(package="keras_attn")
class ChannelAttention(AttentionLayer):
    """Channel attention module of CBAM.

    Each spatially pooled descriptor named in `pool_types` goes through one shared MLP
    (Dense C -> max(1, C // r), ReLU, Dense -> C, with biases as in the authors' code); the
    results are summed, passed through a sigmoid and multiplied into the input:
    `y = x * sigmoid(sum_p MLP(pool_p(x)))`.

    Args:
        reduction_ratio: positive int `r`, the MLP's reduction of the channel count. Default 16.
        pool_types: tuple of pool names from `"avg"`, `"max"`, `"lp"` (the L2 norm over height and
            width, `sqrt(sum(x**2))`) and `"lse"` (log-sum-exp over height and width, computed
            stably). Default `("avg", "max")`.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of the two Dense kernels. Default `"glorot_uniform"`.
        bias_initializer: initializer of the two Dense biases. Default `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

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

    >>> x = np.random.rand(2, 8, 8, 32).astype("float32")
    >>> ChannelAttention(reduction_ratio=8)(x).shape
    (2, 8, 8, 32)

    Reference:
        Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018;
        `Jongchan/attention-module`, `MODELS/cbam.py` (`ChannelGate`).
    """

    def __init__(
        self,
        reduction_ratio=16,
        pool_types=("avg", "max"),
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.reduction_ratio = check_positive_int("reduction_ratio", reduction_ratio)
        self.pool_types = check_pool_types(pool_types)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        hidden = max(1, channels // self.reduction_ratio)
        gate_dtype = self._gate_dtype()
        self.mlp_hidden = keras.layers.Dense(
            hidden, dtype=gate_dtype, name="mlp_hidden", **self._initializers()
        )
        self.mlp_hidden.build((None, channels))
        self.mlp_output = keras.layers.Dense(
            channels, dtype=gate_dtype, name="mlp_output", **self._initializers()
        )
        self.mlp_output.build((None, hidden))

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        x = upcast(inputs)
        logits = None
        for pool_type in self.pool_types:
            pooled = spatial_pool(x, pool_type, self.data_format)
            raw = self.mlp_output(ops.relu(self.mlp_hidden(pooled)))
            logits = raw if logits is None else logits + raw
        gate = as_channel_map(ops.sigmoid(logits), self.data_format, len(inputs.shape))
        return self._apply_gate(inputs, gate, return_attention_scores)

    def compute_attention_scores_shape(self, input_shape):
        return self._channel_map_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            pool_types=list(self.pool_types),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
