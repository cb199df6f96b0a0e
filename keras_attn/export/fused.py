"""Fused attention blocks as LiteRT custom ops, swapped in at export time.

`to_tflite(model, path, fused_attention=True)` runs the export inside `fused_layers(model)`:
every channels_last `CBAM`, `ChannelAttention`, `SpatialAttention`, `SqueezeExcite` and `BAM`
in the model calls, instead of its own `call`, a composite `tf.function` whose
`experimental_implements` signature marks it `tfl_fusable_op`. The converter (with custom ops
allowed) turns each into one CUSTOM op (`KerasAttnCBAM`, `KerasAttnSE`, `KerasAttnBAM`) whose
inputs are the feature map, the folded weights (BatchNorm merged, as `keras_attn.cpu` folds
them) and an int32 config vector, and whose custom options are the same attributes as a
flexbuffer map (versioned). The layers themselves stay pure `keras.ops`; only this module uses
TensorFlow. `keras_attn.export.fused_residual` then folds the residual ADD (and ReLU) that
follows a fused op into it, and `align_buffers` moves every constant buffer behind the
flatbuffer at 64-byte boundaries, which LiteRT requires of custom-op inputs.

The composite bodies compute the blocks with TensorFlow ops (the same maths as the layers in
inference mode); they run only while the exporter traces the model.
"""

import contextlib

import numpy as np

from keras_attn import cpu
from keras_attn._keras_internals import sublayers

ATTRIBUTE_VERSION = 2
OP_NAMES = ("KerasAttnCBAM", "KerasAttnSE", "KerasAttnBAM")
# The names `to_tflite(fused_attention=...)` takes to fuse some block families only, and their ops.
FAMILIES = {"cbam": "KerasAttnCBAM", "se": "KerasAttnSE", "bam": "KerasAttnBAM"}
# Attribute names in config-vector order; must match rust_core/src/litert/ops.rs (OpKind::keys).
# The trailing `residual` and `relu` (the epilogue: + shortcut, then max(., 0)) are written 0 at
# trace time and set by `fused_residual.fold_residual` where an ADD (and ReLU) follows the block.
ATTRIBUTE_KEYS = {
    "KerasAttnCBAM": ("version", "channel_gate", "spatial_gate", "pool_avg", "pool_max", "kernel_size",
                      "residual", "relu"),
    "KerasAttnSE": ("version", "residual", "relu"),
    "KerasAttnBAM": ("version", "dense_layers", "conv_layers", "dilation", "fusion_product",
                     "residual", "relu"),
}
_NO_EPILOGUE = {"residual": 0, "relu": 0}
_ALIGNMENT = 64
# `to_tflite(fused_attention="auto")`: per precision and op, the smallest map (H * W pixels) on
# which the fused block is faster than the same block as XNNPACK builtin ops inside a ResNet;
# None: never fused. From the whole-network measurements in docs/deployment.md: fused CBAM (with
# the residual epilogue) wins on every ResNet-50 map, 56x56 down to 7x7, in both precisions and at
# 1 and 2 threads; smaller maps were not measured, so they stay builtin. Fused BAM loses on every
# map (its spatial convolutions are slower than XNNPACK's); fused SE wins at 1 thread in int8 but
# loses at 2 threads, and a model serves both thread counts, so SE stays builtin.
AUTO_MIN_PIXELS = {
    "float32": {"KerasAttnCBAM": 7 * 7, "KerasAttnSE": None, "KerasAttnBAM": None},
    "int8": {"KerasAttnCBAM": 7 * 7, "KerasAttnSE": None, "KerasAttnBAM": None},
}


def auto_fuses(op, shape, precision):
    """Whether `fused_attention="auto"` fuses a block that becomes `op`, on an NHWC input of
    `shape`, in a `precision` ("float32" or "int8") model (see AUTO_MIN_PIXELS); a map of
    unknown size is not fused."""
    least = AUTO_MIN_PIXELS[precision][op]
    height, width = shape[1:3]
    return least is not None and height is not None and width is not None and (
        height * width >= least)


def _signature(op, attributes):
    keys = ATTRIBUTE_KEYS[op]
    values = [{**attributes, **_NO_EPILOGUE}[key] for key in keys]
    attrs = "".join(f' attr {{ key: "{k}" value {{ i: {int(v)} }} }}' for k, v in zip(keys, values))
    return f'name: "{op}" attr {{ key: "tfl_fusable_op" value {{ b: true }} }}{attrs}', values


def _composite(op, attributes, body):
    """`body(x, *weights)` as a fusable tf.function taking the config vector last."""
    import tensorflow as tf

    implements, values = _signature(op, attributes)

    @tf.function(experimental_implements=implements, autograph=False)
    def composite(x, *rest):
        return body(x, *rest[:-1])

    return composite, tf.constant(values, tf.int32)


def _mlp(h, layers):
    import tensorflow as tf

    for i, (kernel, bias) in enumerate(layers):
        h = tf.matmul(h, kernel) + bias
        if i + 1 < len(layers):
            h = tf.nn.relu(h)
    return h


def _cbam_parts(channel, spatial):
    """Attributes and weights of a CBAM made of `channel` (ChannelAttention or None) and
    `spatial` (SpatialAttention or None)."""
    attributes = dict(version=ATTRIBUTE_VERSION, channel_gate=0, spatial_gate=0, pool_avg=0, pool_max=0, kernel_size=1)
    weights = []
    if channel is not None:
        gate = cpu._channel_gate(channel)
        weights += [gate["hidden_kernel"], gate["hidden_bias"], gate["output_kernel"], gate["output_bias"]]
        attributes.update(channel_gate=1, pool_avg=int(gate["pool_avg"]), pool_max=int(gate["pool_max"]))
    if spatial is not None:
        gate = cpu._spatial_gate(spatial)
        weights += [gate["conv_kernel"], np.array([gate["conv_bias"]], np.float32)]
        attributes.update(spatial_gate=1, kernel_size=int(spatial.kernel_size))
    return attributes, weights


def _cbam_body(attributes):
    import tensorflow as tf

    def body(x, *weights):
        rest = list(weights)
        if attributes["channel_gate"]:
            hk, hb, ok, ob = rest[:4]
            rest = rest[4:]
            pools = []
            if attributes["pool_avg"]:
                pools.append(tf.reduce_mean(x, axis=[1, 2]))
            if attributes["pool_max"]:
                pools.append(tf.reduce_max(x, axis=[1, 2]))
            logits = tf.add_n([_mlp(p, [(hk, hb), (ok, ob)]) for p in pools])
            x = x * tf.sigmoid(logits)[:, None, None, :]
        if attributes["spatial_gate"]:
            kernel, bias = rest
            pooled = tf.concat(
                [tf.reduce_max(x, axis=-1, keepdims=True), tf.reduce_mean(x, axis=-1, keepdims=True)], -1
            )
            x = x * tf.sigmoid(tf.nn.conv2d(pooled, kernel, 1, "SAME") + bias)
        return x

    return body


def _se_parts(layer):
    return {"version": ATTRIBUTE_VERSION}, list(cpu._dense(layer.reduce) + cpu._dense(layer.expand))


def _se_body(attributes):
    import tensorflow as tf

    def body(x, rk, rb, ek, eb):
        gate = tf.sigmoid(_mlp(tf.reduce_mean(x, axis=[1, 2]), [(rk, rb), (ek, eb)]))
        return x * gate[:, None, None, :]

    return body


def _bam_parts(layer):
    channel, spatial = layer.channel_gate, layer.spatial_gate
    dense = [cpu._dense(d, bn) for d, bn in zip(channel.hidden_dense, channel.hidden_bn)]
    dense.append(cpu._dense(channel.output_dense))
    convs = [cpu._conv(spatial.reduce_conv, spatial.reduce_bn)]
    convs += [cpu._conv(c, bn) for c, bn in zip(spatial.dilated_convs, spatial.dilated_bns)]
    convs.append(cpu._conv(spatial.output_conv))
    attributes = dict(
        version=ATTRIBUTE_VERSION,
        dense_layers=len(dense),
        conv_layers=len(convs),
        dilation=int(spatial.dilation_rate),
        fusion_product=int(layer.fusion == "product"),
    )
    return attributes, [w for pair in dense + convs for w in pair]


def _bam_body(attributes):
    import tensorflow as tf

    def body(x, *weights):
        n_dense, n_conv = attributes["dense_layers"], attributes["conv_layers"]
        pairs = [(weights[2 * i], weights[2 * i + 1]) for i in range(n_dense + n_conv)]
        channel = _mlp(tf.reduce_mean(x, axis=[1, 2]), pairs[:n_dense])[:, None, None, :]
        h = x
        for i, (kernel, bias) in enumerate(pairs[n_dense:]):
            dilation = 1 if i in (0, n_conv - 1) else attributes["dilation"]
            h = tf.nn.conv2d(h, kernel, 1, "SAME", dilations=dilation) + bias
            if i + 1 < n_conv:
                h = tf.nn.relu(h)
        fused = channel * h if attributes["fusion_product"] else channel + h
        return x * (1.0 + tf.sigmoid(fused))

    return body


def _fused_call(layer, select):
    """The replacement `call` of a supported layer, or None to keep its own. The replacement
    calls the fused op where `select(layer, op name, input shape)` accepts the call, and the
    layer's own `call` elsewhere."""
    import tensorflow as tf

    from keras_attn import layers

    if getattr(layer, "data_format", None) != "channels_last":
        return None
    if isinstance(layer, layers.CBAM):
        op, (attributes, weights) = "KerasAttnCBAM", _cbam_parts(layer.channel_attention, layer.spatial_attention)
        body = _cbam_body(attributes)
    elif isinstance(layer, layers.ChannelAttention):
        op, (attributes, weights) = "KerasAttnCBAM", _cbam_parts(layer, None)
        body = _cbam_body(attributes)
    elif isinstance(layer, layers.SpatialAttention):
        op, (attributes, weights) = "KerasAttnCBAM", _cbam_parts(None, layer)
        body = _cbam_body(attributes)
    elif isinstance(layer, layers.SqueezeExcite):
        op, (attributes, weights) = "KerasAttnSE", _se_parts(layer)
        body = _se_body(attributes)
    elif isinstance(layer, layers.BAM):
        op, (attributes, weights) = "KerasAttnBAM", _bam_parts(layer)
        body = _bam_body(attributes)
    else:
        return None
    composite, config = _composite(op, attributes, body)
    constants = [tf.constant(w) for w in weights]
    original = layer.call

    def call(inputs, training=None, return_attention_scores=False):
        if return_attention_scores or not select(layer, op, tuple(inputs.shape)):
            return original(inputs, training=training,
                            return_attention_scores=return_attention_scores)
        y = composite(tf.cast(inputs, tf.float32), *constants, config)
        return tf.cast(y, inputs.dtype)

    return call


@contextlib.contextmanager
def fused_layers(model, select=lambda layer, op, shape: True):
    """Within the block, the model's supported attention layers call their fused composites
    where `select(layer, op name, input shape)` accepts the call.

    Yields the number of layers swapped. Layers inside a swapped layer are left alone; every
    swapped layer gets its own `call` back on exit.
    """
    swapped = []

    def visit(layer):
        call = _fused_call(layer, select)
        if call is not None:
            layer.call = call
            swapped.append(layer)
            return
        for child in sublayers(layer):
            visit(child)

    try:
        for layer in sublayers(model):
            visit(layer)
        yield len(swapped)
    finally:
        for layer in swapped:
            del layer.call


def align_buffers(model_bytes, alignment=_ALIGNMENT):
    """Re-serialises a `.tflite` flatbuffer with every constant buffer stored after the
    flatbuffer at an `alignment`-byte boundary (the schema's `Buffer.offset`/`size`)."""
    from keras_attn.export.flatbuffer import _schema, flatbuffer_utils

    fbu = flatbuffer_utils()
    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    payloads = {}
    for i, buffer in enumerate(model.buffers):
        if buffer.data is not None and len(buffer.data):
            payloads[i] = bytes(np.asarray(buffer.data, dtype=np.uint8))
            # Non-default placeholders, so that the packed table reserves both fields.
            buffer.data, buffer.offset, buffer.size = None, 1, 1
    packed = bytearray(fbu.convert_object_to_bytearray(model))
    tail = bytearray()
    start = -(-len(packed) // alignment) * alignment
    locations = {}
    for i, data in payloads.items():
        position = start + len(tail)
        locations[i] = (position, len(data))
        tail += data + bytes(-len(data) % alignment)
    root = _schema.Model.GetRootAs(packed, 0)
    for i, (offset, size) in locations.items():
        fbu.update_packed_buffer(root.Buffers(i), offset=offset, size=size)
    return bytes(packed) + bytes(start - len(packed)) + bytes(tail)
