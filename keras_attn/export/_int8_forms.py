"""Builtin-op forms of the attention layers that quantize well to int8, swapped in at export.

TFLite's int8 CONCATENATION takes one scale for all its inputs and its output, and REDUCE_MAX
keeps its input's scale. SpatialAttention's `conv(concat([max_c(x), mean_c(x)]))` therefore ties
x itself to the range of the concatenation, from the smallest channel mean to the largest
channel max: where x goes well below its channel means (a map before a ReLU, as in a ResNet
block) its negative values are clipped, and so is everything computed from them.

The int8 form halves the channel max before the concatenation and doubles its half of the
kernel: the same products in float (a power of two is exact). The MUL requantizes, so x and its
max keep x's own scale and only the two pooled maps share one. One MUL on the (N, H, W, 1) map
is the whole cost (two separate convolutions summed, which would also give the mean its own
scale, measured slower in XNNPACK). The inference-mode BatchNormalization is folded into the
kernel and the bias. The layers themselves are unchanged; `to_tflite` uses these forms for
quantization="int8" only.
"""

import contextlib

from keras import ops

from keras_attn._keras_internals import nested_layers
from keras_attn.layers._base import upcast
from keras_attn.layers._pooling import channel_axis


def _spatial_logits(layer, x):
    """`layer`'s gate logits with the channel max halved before the concatenation and its
    half of the kernel doubled, BatchNorm folded in."""
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
    kernel = kernel * ops.reshape(ops.convert_to_tensor([2.0, 1.0]), (1, 1, 2, 1))
    axis = channel_axis(layer.data_format)
    pooled = ops.concatenate(
        [ops.max(x, axis=axis, keepdims=True) * 0.5, ops.mean(x, axis=axis, keepdims=True)],
        axis=axis)
    logits = ops.conv(pooled, kernel, padding="same", data_format=layer.data_format)
    if shift is not None:  # right after the convolution: the converter folds it into the bias
        logits = logits + ops.reshape(shift, (1, 1, 1, 1))
    return logits


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
    for layer in nested_layers(model):
        if isinstance(layer, layers.SpatialAttention) and layer.built:
            layer.call = _spatial_call(layer)
            swapped.append(layer)
    try:
        yield len(swapped)
    finally:
        for layer in swapped:
            layer.__dict__.pop("call", None)
