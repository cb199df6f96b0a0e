"""SelectiveKernel: the selective kernel convolution of SKNet."""

import keras
from keras import ops

from keras_attn.layers._base import AttentionLayer, check_positive_int, upcast
from keras_attn.layers._pooling import as_channel_map, spatial_pool

# The branches' receptive fields: a 3x3 convolution and a 3x3 with dilation 2 (SKNet's cheaper
# stand-in for 5x5).
_BRANCH_DILATIONS = (1, 2)


@keras.saving.register_keras_serializable(package="keras_attn")
class SelectiveKernel(AttentionLayer):
    """Selective kernel convolution: attention over branches with different receptive fields.

    Split: two branches, a 3x3 convolution and a 3x3 convolution with dilation 2, each
    [Conv2D(`filters`, no bias, `groups`), BatchNormalization, ReLU]. Fuse: `U = U_1 + U_2`,
    `s = mean_hw(U)`, `z = ReLU(BN(Dense_d(s)))` with `d = max(filters // r, min_units)`.
    Select: one Dense per branch gives per-channel logits, a softmax across the branches gives
    weights `a_m`, and `V = sum_m a_m * U_m`.

    Args:
        filters: positive int, the branches' output channels; None (default) keeps the input's.
        reduction_ratio: positive int `r` of the fuse step. Default 16.
        min_units: positive int `L`, the least width of the fuse step. Default 32.
        groups: positive int, the branch convolutions' groups; it must divide both the input
            channels and `filters`. Default 1.
        data_format: `"channels_last"` or `"channels_first"`; None (default) uses
            `keras.config.image_data_format()`.
        kernel_initializer: initializer of every kernel. Default `"glorot_uniform"`.
        bias_initializer: initializer of the selection Dense biases. Default `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Unlike the other attention layers, it takes 2D feature maps only.

    Attributes (after build): `branch_convs`, `branch_bns` (lists, one per branch), `fuse_dense`
    (no bias: a BatchNormalization follows), `fuse_bn`, `select_dense` (list, one per branch).

    Call arguments:
        inputs: the 4-D feature map.
        training: passed to the BatchNormalization layers.
        return_attention_scores: if True, also return the branch weights `a`, shape
            `(N, 2, filters)` (softmax over axis 1), whatever the data format.

    Input shape:
        4-D tensor `(batch, height, width, channels)` (channels_last) or
        `(batch, channels, height, width)` (channels_first). Height and width may be unknown.
        Integer and boolean inputs are cast to the layer's compute dtype (float32 by default);
        an empty batch gives an empty output.

    Output shape:
        The input shape with `filters` channels.

    Example:

    >>> x = np.random.rand(2, 8, 8, 32).astype("float32")
    >>> SelectiveKernel(filters=64, groups=8)(x).shape
    (2, 8, 8, 64)

    Reference:
        Li et al., "Selective Kernel Networks", CVPR 2019.
    """

    SUPPORTED_RANKS = (4,)

    def __init__(
        self,
        filters=None,
        reduction_ratio=16,
        min_units=32,
        groups=1,
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        if filters is not None:
            filters = check_positive_int("filters", filters)
        self.filters = filters
        self.reduction_ratio = check_positive_int("reduction_ratio", reduction_ratio)
        self.min_units = check_positive_int("min_units", min_units)
        self.groups = check_positive_int("groups", groups)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _output_channels(self, input_shape):
        return self.filters or input_shape[self.channel_axis]

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        filters = self._output_channels(input_shape)
        if channels % self.groups or filters % self.groups:
            raise ValueError(
                f"`groups` must divide both the input channels ({channels}) and `filters` "
                f"({filters}); got groups={self.groups}."
            )
        branch_shape = self._spatial_map_shape(input_shape, channels=filters)
        self.branch_convs, self.branch_bns = [], []
        for i, dilation in enumerate(_BRANCH_DILATIONS):
            conv = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                dilation_rate=dilation,
                groups=self.groups,
                use_bias=False,
                data_format=self.data_format,
                dtype=self.dtype_policy,
                name=f"branch_conv_{i}",
                **self._initializers(bias=False),
            )
            conv.build(input_shape)
            bn = keras.layers.BatchNormalization(
                axis=self.channel_axis,
                epsilon=1e-5,
                momentum=0.9,
                dtype=self.dtype_policy,
                name=f"branch_bn_{i}",
            )
            bn.build(branch_shape)
            self.branch_convs.append(conv)
            self.branch_bns.append(bn)

        units = max(filters // self.reduction_ratio, self.min_units)
        gate_dtype = self._gate_dtype()
        self.fuse_dense = keras.layers.Dense(
            units,
            use_bias=False,
            dtype=gate_dtype,
            name="fuse_dense",
            **self._initializers(bias=False),
        )
        self.fuse_dense.build((None, filters))
        self.fuse_bn = keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.9, dtype=gate_dtype, name="fuse_bn"
        )
        self.fuse_bn.build((None, units))
        self.select_dense = []
        for i in range(len(_BRANCH_DILATIONS)):
            dense = keras.layers.Dense(
                filters,
                dtype=gate_dtype,
                name=f"select_dense_{i}",
                **self._initializers(),
            )
            dense.build((None, units))
            self.select_dense.append(dense)

    def call(self, inputs, training=None, return_attention_scores=False):
        inputs = self._float_inputs(inputs)
        empty = self._empty_outputs(inputs, return_attention_scores)
        if empty is not None:
            return empty
        branches = [
            ops.relu(bn(conv(inputs), training=training))
            for conv, bn in zip(self.branch_convs, self.branch_bns)
        ]
        fused = upcast(branches[0])
        for branch in branches[1:]:
            fused = fused + upcast(branch)
        pooled = spatial_pool(fused, "avg", self.data_format)
        z = ops.relu(self.fuse_bn(self.fuse_dense(pooled), training=training))
        first, second = (dense(z) for dense in self.select_dense)
        # The softmax over two branches, written as sigmoids of the logit difference: stacking
        # and a softmax across a middle axis convert to TFLite PACK and TRANSPOSE ops that
        # XNNPACK does not take, which would split a converted model into several partitions.
        weights = [ops.sigmoid(first - second), ops.sigmoid(second - first)]
        outputs = None
        for weight, branch in zip(weights, branches):
            weight = ops.cast(as_channel_map(weight, self.data_format, 4), branch.dtype)
            outputs = branch * weight if outputs is None else outputs + branch * weight
        if return_attention_scores:
            return outputs, ops.cast(ops.stack(weights, axis=1), self.compute_dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return self._spatial_map_shape(input_shape, channels=self._output_channels(input_shape))

    def compute_attention_scores_shape(self, input_shape):
        return (input_shape[0], len(_BRANCH_DILATIONS), self._output_channels(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            reduction_ratio=self.reduction_ratio,
            min_units=self.min_units,
            groups=self.groups,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
