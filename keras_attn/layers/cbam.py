"""CBAM: channel attention, then spatial attention."""

import keras

from keras_attn.layers._base import AttentionLayer, check_odd_kernel_size
from keras_attn.layers.channel import ChannelAttention
from keras_attn.layers.spatial import SpatialAttention


@keras.saving.register_keras_serializable(package="keras_attn")
class CBAM(AttentionLayer):
    """Convolutional Block Attention Module.

    Refines a feature map with `ChannelAttention`, then with `SpatialAttention`, as in the
    authors' code. `spatial=False` keeps only the channel gate (the authors' `no_spatial`).

    Args:
        reduction_ratio: positive int, the channel MLP's reduction (hidden width
            `max(1, C // reduction_ratio)`). Default 16.
        pool_types: pools fed to the channel MLP, from `"avg"`, `"max"`, `"lp"`, `"lse"`.
            Default `("avg", "max")`.
        kernel_size: positive odd int, the spatial gate's convolution size. Default 7.
        use_batchnorm: bool, whether the spatial gate batch-normalizes its logits. Default True.
        spatial: bool; False drops the spatial gate. Default True.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of every kernel. Default `"glorot_uniform"`.
        bias_initializer: initializer of the channel MLP's biases. Default `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Attributes (after construction): `channel_attention` (a `ChannelAttention`) and
    `spatial_attention` (a `SpatialAttention`, or None when `spatial=False`).

    Call arguments:
        inputs: the feature map (rank 3, 4 or 5).
        training: passed to the spatial gate's BatchNormalization.
        return_attention_scores: if True, also return a dict of the gates: `"channel"`, shape
            `(N, 1, 1, C)`, and (unless `spatial=False`) `"spatial"`, shape `(N, H, W, 1)`
            (channels_first: `(N, C, 1, 1)` and `(N, 1, H, W)`).

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

    >>> model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(32, 3)])
    >>> model.add(CBAM(reduction_ratio=8))
    >>> model.output_shape
    (None, 14, 14, 32)

    Reference:
        Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018;
        `Jongchan/attention-module`, `MODELS/cbam.py` (`CBAM`).
    """

    def __init__(
        self,
        reduction_ratio=16,
        pool_types=("avg", "max"),
        kernel_size=7,
        use_batchnorm=True,
        spatial=True,
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.kernel_size = check_odd_kernel_size("kernel_size", kernel_size)
        self.use_batchnorm = bool(use_batchnorm)
        self.spatial = bool(spatial)
        self.channel_attention = ChannelAttention(
            reduction_ratio=reduction_ratio,
            pool_types=pool_types,
            data_format=self.data_format,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            dtype=self.dtype_policy,
            name="channel_attention",
        )
        self.spatial_attention = None
        if self.spatial:
            self.spatial_attention = SpatialAttention(
                kernel_size=self.kernel_size,
                use_batchnorm=self.use_batchnorm,
                data_format=self.data_format,
                kernel_initializer=kernel_initializer,
                dtype=self.dtype_policy,
                name="spatial_attention",
            )

    @property
    def reduction_ratio(self):
        return self.channel_attention.reduction_ratio

    @property
    def pool_types(self):
        return self.channel_attention.pool_types

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        self.channel_attention.build(input_shape)
        if self.spatial_attention is not None:
            self.spatial_attention.build(input_shape)

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        outputs, channel_gate = self.channel_attention(
            inputs, training=training, return_attention_scores=True
        )
        scores = {"channel": channel_gate}
        if self.spatial_attention is not None:
            outputs, scores["spatial"] = self.spatial_attention(
                outputs, training=training, return_attention_scores=True
            )
        if return_attention_scores:
            return outputs, scores
        return outputs

    def compute_attention_scores_shape(self, input_shape):
        shapes = {"channel": self._channel_map_shape(input_shape)}
        if self.spatial:
            shapes["spatial"] = self._spatial_map_shape(input_shape)
        return shapes

    def get_config(self):
        config = super().get_config()
        channel_config = self.channel_attention.get_config()
        config.update(
            reduction_ratio=channel_config["reduction_ratio"],
            pool_types=channel_config["pool_types"],
            kernel_size=self.kernel_size,
            use_batchnorm=self.use_batchnorm,
            spatial=self.spatial,
            kernel_initializer=channel_config["kernel_initializer"],
            bias_initializer=channel_config["bias_initializer"],
        )
        return config
