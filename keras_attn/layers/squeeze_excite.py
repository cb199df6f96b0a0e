"""SqueezeExcite: the squeeze-and-excitation block of SENet."""

import keras

from keras_attn.layers._base import AttentionLayer, check_positive_int, upcast
from keras_attn.layers._pooling import as_channel_map, spatial_pool


@keras.saving.register_keras_serializable(package="keras_attn")
class SqueezeExcite(AttentionLayer):
    """Squeeze-and-excitation block.

    Global average pooling ("squeeze"), Dense `max(1, C // r)` with ReLU, Dense C with sigmoid
    ("excitation", both with biases), then the per-channel scale:
    `y = x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)`.

    Args:
        reduction_ratio: positive int `r`; hidden width `max(1, C // r)`. Default 16.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of the Dense kernels. Default `"glorot_uniform"`.
        bias_initializer: initializer of the Dense biases. Default `"zeros"`.
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
    >>> SqueezeExcite(reduction_ratio=4)(x).shape
    (2, 8, 8, 32)

    Reference:
        Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.
    """

    def __init__(
        self,
        reduction_ratio=16,
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.reduction_ratio = check_positive_int("reduction_ratio", reduction_ratio)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        hidden = max(1, channels // self.reduction_ratio)
        gate_dtype = self._gate_dtype()
        self.reduce = keras.layers.Dense(
            hidden, activation="relu", dtype=gate_dtype, name="reduce", **self._initializers()
        )
        self.reduce.build((None, channels))
        self.expand = keras.layers.Dense(
            channels, activation="sigmoid", dtype=gate_dtype, name="expand", **self._initializers()
        )
        self.expand.build((None, hidden))

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        pooled = spatial_pool(upcast(inputs), "avg", self.data_format)
        gate = as_channel_map(
            self.expand(self.reduce(pooled)), self.data_format, len(inputs.shape)
        )
        return self._apply_gate(inputs, gate, return_attention_scores)

    def compute_attention_scores_shape(self, input_shape):
        return self._channel_map_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
