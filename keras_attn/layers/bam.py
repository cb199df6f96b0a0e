"""BAM: the bottleneck attention module and its channel and spatial gates."""

import keras
from keras import ops

from keras_attn.layers._base import (
    AttentionLayer,
    check_non_negative_int,
    check_positive_int,
    conv_layer,
    upcast,
)
from keras_attn.layers._pooling import as_channel_map, spatial_pool

FUSIONS = ("sum", "product")

# The authors' BatchNorm1d/BatchNorm2d keep PyTorch's defaults: eps 1e-5, momentum 0.1, which is
# Keras' momentum 0.9.
_BN_KWARGS = dict(epsilon=1e-5, momentum=0.9)


@keras.saving.register_keras_serializable(package="keras_attn")
class BAMChannelGate(AttentionLayer):
    """Channel gate of BAM; returns per-channel attention logits.

    Global average pooling, then `num_layers` times [Dense C // r, BatchNormalization, ReLU],
    then Dense C (all Dense with biases). The output is the logits, before any sigmoid.

    Args:
        reduction_ratio: positive int `r`; hidden width `max(1, C // r)`. Default 16.
        num_layers: positive int, the number of hidden [Dense, BN, ReLU] stages. Default 1.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of the Dense kernels. Default `"glorot_uniform"`.
        bias_initializer: initializer of the Dense biases. Default `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the feature map (rank 3, 4 or 5).
        training: passed to the BatchNormalization layers.
        return_attention_scores: if True, also return `sigmoid(logits)`, the gate alone.

    Input shape:
        4-D tensor `(batch, height, width, channels)` (channels_last) or
        `(batch, channels, height, width)` (channels_first); also 3-D `(batch, length, channels)`
        and 5-D `(batch, depth, height, width, channels)` (channels first: after the batch), the
        rank taken at build. Spatial sizes may be unknown. Integer and boolean inputs are cast to
        the layer's compute dtype (float32 by default), as Keras' Dense does; an empty batch
        gives an empty output. The shapes written above are for 4-D inputs; at ranks 3 and 5
        the spatial axes are those of the input.

    Output shape:
        `(batch, 1, 1, channels)` (channels_last) or `(batch, channels, 1, 1)`.

    Example:

    >>> x = np.random.rand(2, 8, 8, 32).astype("float32")
    >>> BAMChannelGate(reduction_ratio=8)(x).shape
    (2, 1, 1, 32)

    Reference:
        Park et al., "BAM: Bottleneck Attention Module", BMVC 2018;
        `Jongchan/attention-module`, `MODELS/bam.py` (`ChannelGate`).
    """

    def __init__(
        self,
        reduction_ratio=16,
        num_layers=1,
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.reduction_ratio = check_positive_int("reduction_ratio", reduction_ratio)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        hidden = max(1, channels // self.reduction_ratio)
        gate_dtype = self._gate_dtype()
        self.hidden_dense, self.hidden_bn = [], []
        width = channels
        for i in range(self.num_layers):
            dense = keras.layers.Dense(
                hidden, dtype=gate_dtype, name=f"hidden_dense_{i}", **self._initializers()
            )
            dense.build((None, width))
            bn = keras.layers.BatchNormalization(
                dtype=gate_dtype, name=f"hidden_bn_{i}", **_BN_KWARGS
            )
            bn.build((None, hidden))
            self.hidden_dense.append(dense)
            self.hidden_bn.append(bn)
            width = hidden
        self.output_dense = keras.layers.Dense(
            channels, dtype=gate_dtype, name="output_dense", **self._initializers()
        )
        self.output_dense.build((None, width))

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        # A global mean over H and W: the authors' avg_pool2d(x, H) assumes H == W.
        hidden = spatial_pool(upcast(inputs), "avg", self.data_format)
        for dense, bn in zip(self.hidden_dense, self.hidden_bn):
            hidden = ops.relu(bn(dense(hidden), training=training))
        logits = as_channel_map(self.output_dense(hidden), self.data_format, len(inputs.shape))
        outputs = ops.cast(logits, self.compute_dtype)
        if return_attention_scores:
            return outputs, ops.cast(ops.sigmoid(logits), self.compute_dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return self._channel_map_shape(input_shape)

    def compute_attention_scores_shape(self, input_shape):
        return self._channel_map_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            num_layers=self.num_layers,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class BAMSpatialGate(AttentionLayer):
    """Spatial gate of BAM; returns one-channel attention logits.

    1x1 convolution to `max(1, C // r)` channels, BatchNormalization, ReLU; then
    `num_dilated_convs` times [3x3 convolution with `dilation_rate`, BatchNormalization, ReLU];
    then a 1x1 convolution to one channel (all convolutions with biases, "same" padding). The
    convolutions run in the layer's compute dtype: they act on the whole feature map.

    Args:
        reduction_ratio: positive int `r`; the convolutions' width is `max(1, C // r)`. Default 16.
        num_dilated_convs: non-negative int, the number of dilated 3x3 stages. Default 2.
        dilation_rate: positive int, the 3x3 convolutions' dilation. Default 4.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of the convolution kernels. Default `"glorot_uniform"`.
        bias_initializer: initializer of the convolution biases. Default `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the feature map (rank 3, 4 or 5).
        training: passed to the BatchNormalization layers.
        return_attention_scores: if True, also return `sigmoid(logits)`, the gate alone.

    Input shape:
        4-D tensor `(batch, height, width, channels)` (channels_last) or
        `(batch, channels, height, width)` (channels_first); also 3-D `(batch, length, channels)`
        and 5-D `(batch, depth, height, width, channels)` (channels first: after the batch), the
        rank taken at build. Spatial sizes may be unknown. Integer and boolean inputs are cast to
        the layer's compute dtype (float32 by default), as Keras' Dense does; an empty batch
        gives an empty output. The shapes written above are for 4-D inputs; at ranks 3 and 5
        the spatial axes are those of the input.

    Output shape:
        `(batch, height, width, 1)` (channels_last) or `(batch, 1, height, width)`.

    Example:

    >>> x = np.random.rand(2, 8, 8, 32).astype("float32")
    >>> BAMSpatialGate(reduction_ratio=8)(x).shape
    (2, 8, 8, 1)

    Reference:
        Park et al., "BAM: Bottleneck Attention Module", BMVC 2018;
        `Jongchan/attention-module`, `MODELS/bam.py` (`SpatialGate`).
    """

    def __init__(
        self,
        reduction_ratio=16,
        num_dilated_convs=2,
        dilation_rate=4,
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.reduction_ratio = check_positive_int("reduction_ratio", reduction_ratio)
        self.num_dilated_convs = check_non_negative_int("num_dilated_convs", num_dilated_convs)
        self.dilation_rate = check_positive_int("dilation_rate", dilation_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _conv(self, rank, filters, kernel_size, name, dilation_rate=1):
        return conv_layer(rank)(
            filters,
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            data_format=self.data_format,
            dtype=self.dtype_policy,
            name=name,
            **self._initializers(),
        )

    def _bn(self, name):
        return keras.layers.BatchNormalization(
            axis=self.channel_axis, dtype=self.dtype_policy, name=name, **_BN_KWARGS
        )

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        hidden = max(1, channels // self.reduction_ratio)
        hidden_shape = self._spatial_map_shape(input_shape, channels=hidden)
        rank = len(input_shape)
        self.reduce_conv = self._conv(rank, hidden, 1, "reduce_conv")
        self.reduce_conv.build(input_shape)
        self.reduce_bn = self._bn("reduce_bn")
        self.reduce_bn.build(hidden_shape)
        self.dilated_convs, self.dilated_bns = [], []
        for i in range(self.num_dilated_convs):
            conv = self._conv(
                rank, hidden, 3, f"dilated_conv_{i}", dilation_rate=self.dilation_rate
            )
            conv.build(hidden_shape)
            bn = self._bn(f"dilated_bn_{i}")
            bn.build(hidden_shape)
            self.dilated_convs.append(conv)
            self.dilated_bns.append(bn)
        self.output_conv = self._conv(rank, 1, 1, "output_conv")
        self.output_conv.build(hidden_shape)

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        hidden = ops.relu(self.reduce_bn(self.reduce_conv(inputs), training=training))
        for conv, bn in zip(self.dilated_convs, self.dilated_bns):
            hidden = ops.relu(bn(conv(hidden), training=training))
        logits = self.output_conv(hidden)
        if return_attention_scores:
            scores = ops.cast(ops.sigmoid(upcast(logits)), self.compute_dtype)
            return logits, scores
        return logits

    def compute_output_shape(self, input_shape):
        return self._spatial_map_shape(input_shape)

    def compute_attention_scores_shape(self, input_shape):
        return self._spatial_map_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            num_dilated_convs=self.num_dilated_convs,
            dilation_rate=self.dilation_rate,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_attn")
class BAM(AttentionLayer):
    """Bottleneck Attention Module.

    `y = x * (1 + sigmoid(fuse(channel_logits, spatial_logits)))` with the logits of
    `BAMChannelGate` (shape `(N, 1, 1, C)`) and `BAMSpatialGate` (shape `(N, H, W, 1)`) broadcast
    to `(N, H, W, C)`. `fusion="sum"` adds them, as the paper writes; `fusion="product"` multiplies
    them, as the authors' released code (and so their published weights) does. The fusion, the
    sigmoid and the scale are computed in float32 under mixed precision.

    Args:
        reduction_ratio: positive int, both gates' reduction (hidden width `max(1, C // r)`).
            Default 16.
        num_layers: positive int, the channel gate's hidden stages. Default 1.
        num_dilated_convs: non-negative int, the spatial gate's dilated 3x3 stages. Default 2.
        dilation_rate: positive int, their dilation. Default 4.
        fusion: `"sum"` (default, the paper) or `"product"` (the authors' code).
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of every kernel. Default `"glorot_uniform"`.
        bias_initializer: initializer of every bias. Default `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Attributes: `channel_gate` (`BAMChannelGate`), `spatial_gate` (`BAMSpatialGate`), `fusion`.

    Call arguments:
        inputs: the feature map (rank 3, 4 or 5).
        training: passed to the gates' BatchNormalization layers.
        return_attention_scores: if True, also return a dict of maps: `"channel"` =
            sigmoid(channel logits), shape `(N, 1, 1, C)`; `"spatial"` = sigmoid(spatial logits),
            shape `(N, H, W, 1)`; `"attention"` = sigmoid(fused logits), shape `(N, H, W, C)`, so
            that `outputs = inputs * (1 + attention)` (channels_first: channels on axis 1).

    Input shape:
        4-D tensor `(batch, height, width, channels)` (channels_last) or
        `(batch, channels, height, width)` (channels_first); also 3-D `(batch, length, channels)`
        and 5-D `(batch, depth, height, width, channels)` (channels first: after the batch), the
        rank taken at build. Spatial sizes may be unknown and differ. Integer and boolean inputs
        are cast to the layer's compute dtype (float32 by default), as Keras' Dense does; an
        empty batch gives an empty output. The shapes written above are for 4-D inputs; at
        ranks 3 and 5 the spatial axes are those of the input.

    Output shape:
        Same as the input.

    Example:

    >>> x = np.random.rand(2, 8, 8, 32).astype("float32")
    >>> BAM(reduction_ratio=8, fusion="product")(x).shape
    (2, 8, 8, 32)

    Reference:
        Park et al., "BAM: Bottleneck Attention Module", BMVC 2018;
        `Jongchan/attention-module`, `MODELS/bam.py` (`BAM`).
    """

    def __init__(
        self,
        reduction_ratio=16,
        num_layers=1,
        num_dilated_convs=2,
        dilation_rate=4,
        fusion="sum",
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        if fusion not in FUSIONS:
            raise ValueError(f"`fusion` must be one of {FUSIONS}; got {fusion!r}.")
        self.fusion = fusion
        initializers = dict(
            kernel_initializer=kernel_initializer, bias_initializer=bias_initializer
        )
        # The channel gate acts on a pooled vector: float32 under mixed precision.
        self.channel_gate = BAMChannelGate(
            reduction_ratio=reduction_ratio,
            num_layers=num_layers,
            data_format=self.data_format,
            dtype=self._gate_dtype(),
            name="channel_gate",
            **initializers,
        )
        self.spatial_gate = BAMSpatialGate(
            reduction_ratio=reduction_ratio,
            num_dilated_convs=num_dilated_convs,
            dilation_rate=dilation_rate,
            data_format=self.data_format,
            dtype=self.dtype_policy,
            name="spatial_gate",
            **initializers,
        )

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        self.channel_gate.build(input_shape)
        self.spatial_gate.build(input_shape)

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        channel_logits = upcast(self.channel_gate(inputs, training=training))
        spatial_logits = upcast(self.spatial_gate(inputs, training=training))
        if self.fusion == "sum":
            fused = channel_logits + spatial_logits
        else:
            fused = channel_logits * spatial_logits
        attention = ops.sigmoid(fused)
        outputs = inputs * ops.cast(1.0 + attention, inputs.dtype)
        if return_attention_scores:
            scores = {
                "channel": ops.sigmoid(channel_logits),
                "spatial": ops.sigmoid(spatial_logits),
                "attention": attention,
            }
            return outputs, {k: ops.cast(v, self.compute_dtype) for k, v in scores.items()}
        return outputs

    def compute_attention_scores_shape(self, input_shape):
        return {
            "channel": self._channel_map_shape(input_shape),
            "spatial": self._spatial_map_shape(input_shape),
            "attention": tuple(input_shape),
        }

    def get_config(self):
        config = super().get_config()
        channel_config = self.channel_gate.get_config()
        spatial_config = self.spatial_gate.get_config()
        config.update(
            reduction_ratio=channel_config["reduction_ratio"],
            num_layers=channel_config["num_layers"],
            num_dilated_convs=spatial_config["num_dilated_convs"],
            dilation_rate=spatial_config["dilation_rate"],
            fusion=self.fusion,
            kernel_initializer=channel_config["kernel_initializer"],
            bias_initializer=channel_config["bias_initializer"],
        )
        return config
