"""SpatialAttention: the spatial gate of CBAM."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer, check_odd_kernel_size, conv_layer, upcast
from keras_attn.layers._pooling import channel_pool


@keras.saving.register_keras_serializable(package="keras_attn")
class SpatialAttention(AttentionLayer):
    """Spatial attention module of CBAM.

    Pools over channels into a two-channel map (the max first, then the mean, the authors'
    order), convolves it to one channel (no bias), batch-normalizes it (epsilon 1e-5, momentum
    0.99: the authors' `eps=1e-5, momentum=0.01`), and multiplies its sigmoid into the input:
    `y = x * sigmoid(BN(conv([max_c(x), mean_c(x)])))`.

    Args:
        kernel_size: positive odd int, the convolution's size ("same" padding): `k`, `k x k`
            or `k x k x k` for 1D, 2D or 3D inputs. Default 7.
        use_batchnorm: bool; False drops the BatchNormalization (the plain convolution of many
            blog versions). Default True.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of the convolution kernel. Default `"glorot_uniform"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the feature map (rank 3, 4 or 5).
        training: passed to the BatchNormalization.
        return_attention_scores: if True, also return the gate, shape `(N, H, W, 1)`
            (`(N, 1, H, W)` for channels_first).

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
    >>> SpatialAttention(kernel_size=7)(x).shape
    (2, 8, 8, 32)

    Reference:
        Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018;
        `Jongchan/attention-module`, `MODELS/cbam.py` (`SpatialGate`, `ChannelPool`).
    """

    def __init__(
        self,
        kernel_size=7,
        use_batchnorm=True,
        data_format=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.kernel_size = check_odd_kernel_size("kernel_size", kernel_size)
        self.use_batchnorm = bool(use_batchnorm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        pooled_shape = self._spatial_map_shape(input_shape, channels=2)
        gate_dtype = self._gate_dtype()
        self.conv = conv_layer(len(input_shape))(
            1,
            self.kernel_size,
            padding="same",
            use_bias=False,
            data_format=self.data_format,
            dtype=gate_dtype,
            **self._initializers(bias=False),
            name="conv",
        )
        self.conv.build(pooled_shape)
        self.bn = None
        if self.use_batchnorm:
            self.bn = keras.layers.BatchNormalization(
                axis=self.channel_axis, epsilon=1e-5, momentum=0.99, dtype=gate_dtype, name="bn"
            )
            self.bn.build(self._spatial_map_shape(input_shape))

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        logits = self.conv(channel_pool(upcast(inputs), self.data_format))
        if self.bn is not None:
            logits = self.bn(logits, training=training)
        return self._apply_gate(inputs, ops.sigmoid(logits), return_attention_scores)

    def compute_attention_scores_shape(self, input_shape):
        return self._spatial_map_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            use_batchnorm=self.use_batchnorm,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
