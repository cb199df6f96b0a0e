"""Builtin-op forms of the attention layers that quantize well to int8, swapped in at export.

TFLite's int8 CONCATENATION takes one scale for all its inputs and its output, and REDUCE_MAX
keeps its input's scale. SpatialAttention's `conv(concat([max_c(x), mean_c(x)]))` therefore ties
x, its channel max and its channel mean to one range: the range of the concatenation, from the
smallest mean to the largest max. Where x goes well below its channel means (a map before a
ReLU, as in a ResNet block) its negative values are clipped, and the small mean gets few steps.

The int8 form convolves each pooled map with its own half of the kernel and adds the two,
`conv(max_c(x), k_max) + conv(mean_c(x), k_mean)`, which is the same sum in another order:
the max keeps x's scale, the mean gets its own, and the add requantizes both. The inference-mode
BatchNormalization is folded into the two kernels and the bias, so the gate is as many ops as
before (ADD in place of CONCATENATION). The layers themselves are unchanged; `to_tflite` uses
these forms for quantization="int8" only.
"""

import contextlib

from keras import ops

from keras_attn.layers._base import upcast
from keras_attn.layers._pooling import channel_axis


def _spatial_logits(layer, x):
    """`layer`'s gate logits with one convolution per pooled map and BatchNorm folded in."""
    kernel = ops.convert_to_tensor(layer.conv.kernel)  # (k, k, 2, 1): max first, then mean
    bn, shift = layer.bn, None
    if bn is not None:
        scale = ops.rsqrt(bn.moving_variance + bn.epsilon)
        if bn.scale:
            scale = scale * bn.gamma
        shift = -bn.moving_mean * scale
        if bn.center:
            shift = shift + bn.beta
        kernel = kernel * scale

    def conv(pooled, index):
        return ops.conv(pooled, kernel[:, :, index : index + 1, :], padding="same",
                        data_format=layer.data_format)

    axis = channel_axis(layer.data_format)
    logits = conv(ops.max(x, axis=axis, keepdims=True), 0)
    if shift is not None:  # right after a convolution: the converter folds it into the bias
        logits = logits + ops.reshape(shift, (1, 1, 1, 1))
    return logits + conv(ops.mean(x, axis=axis, keepdims=True), 1)


def _spatial_call(layer):
    original = layer.call

    def call(inputs, training=None, return_attention_scores=False):
        if training:  # batch statistics: the layer's own form
            return original(inputs, training=training,
                            return_attention_scores=return_attention_scores)
        x = upcast(inputs)
        gate = ops.sigmoid(_spatial_logits(layer, x))
        return layer._apply_gate(inputs, gate, return_attention_scores)

    return call


@contextlib.contextmanager
def int8_forms(model):
    """Within the block, every SpatialAttention in `model` (CBAM's included) computes its gate
    in the int8-friendly form. Yields the number of layers swapped."""
    from keras_attn import layers

    swapped = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.SpatialAttention) and layer.built:
            layer.call = _spatial_call(layer)
            swapped.append(layer)
    try:
        yield len(swapped)
    finally:
        for layer in swapped:
            layer.__dict__.pop("call", None)
