"""Repairs int8 activations whose calibrated range came out empty.

When every calibration sample gives a tensor the value 0 (a ReLU unit that never fires, the
difference of two equal logits), TFLite's quantizer gives it the range [-1e-6, 1e-6], a scale of
about 7.8e-9. LiteRT's reference kernels run that, but XNNPACK refuses it: the requantization
scale of the op producing it exceeds XNNPACK's limit (2**8), and creating the XNNPACK runtime
fails for the whole model ("failed to create XNNPACK runtime"). Such a tensor only ever holds
its zero point, so any scale represents it exactly; we give it the scale of the activation it is
computed from, and rescale the int32 biases of the ops that read it (their bias scale is
input scale x weight scale).
"""

import numpy as np

from keras_attn.export.flatbuffer import flatbuffer_utils

# The quantizer widens an empty range to [-1e-6, 1e-6]: scale 2e-6 / 255.
_EMPTY_RANGE_SCALE = 2e-6 / 255 * 1.01
# Ops whose int8 kernels require the output scale to equal the input scale.
_SAME_SCALE_OPS = {
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION", "PAD", "SLICE",
    "STRIDED_SLICE", "SPLIT", "MAX_POOL_2D", "REDUCE_MAX", "REDUCE_MIN", "GATHER",
}
# Ops with an int32 bias quantized with scale input_scale * weight_scale:
# (index of the activation input, index of the bias input).
_BIASED_OPS = {
    "FULLY_CONNECTED": (0, 2), "CONV_2D": (0, 2), "DEPTHWISE_CONV_2D": (0, 2),
    "TRANSPOSE_CONV": (2, 3),
}
_INT8 = 9  # schema TensorType.INT8


def _scale(tensor):
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0])


def _is_empty_range(tensor, constant):
    scale = _scale(tensor)
    return (not constant and tensor.type == _INT8 and scale is not None
            and 0 < scale <= _EMPTY_RANGE_SCALE)


def widen_empty_ranges(model_bytes):
    """Returns `(fixed model bytes, number of tensors repaired)`; the input when none needed it."""
    fbu = flatbuffer_utils()
    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    buffer_users = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer_users[tensor.buffer] = buffer_users.get(tensor.buffer, 0) + 1
    repaired = 0
    for subgraph in model.subgraphs:
        tensors = subgraph.tensors

        def constant(i):
            data = model.buffers[tensors[i].buffer].data
            return data is not None and len(data) > 0

        new_scales = {}  # tensor index -> (old scale, new scale)
        for op in subgraph.operators:
            name = fbu.opcode_to_name(model, op.opcodeIndex)
            activations = [i for i in op.inputs if i >= 0 and not constant(i)]
            for out in op.outputs:
                if not _is_empty_range(tensors[out], constant(out)):
                    continue
                source = next((i for i in activations if _scale(tensors[i]) is not None), None)
                if source in new_scales:  # propagate through ops that keep the scale
                    scale = new_scales[source][1]
                elif source is not None and not _is_empty_range(tensors[source], False):
                    scale = _scale(tensors[source])
                else:
                    scale = 1.0 / 256
                if name in _SAME_SCALE_OPS and source is not None and source not in new_scales:
                    continue  # its input keeps its scale: so must it
                new_scales[out] = (_scale(tensors[out]), scale)
                tensors[out].quantization.scale = np.array([scale], np.float32)
        for op in subgraph.operators:
            activation, bias_input = _BIASED_OPS.get(
                fbu.opcode_to_name(model, op.opcodeIndex), (None, None)
            )
            if (activation is None or op.inputs[activation] not in new_scales
                    or len(op.inputs) <= bias_input or op.inputs[bias_input] < 0):
                continue
            old, new = new_scales[op.inputs[activation]]
            bias = tensors[op.inputs[bias_input]]
            values = np.frombuffer(bytes(model.buffers[bias.buffer].data), np.int32)
            rescaled = np.round(values.astype(np.float64) * (old / new)).astype(np.int32)
            data = np.frombuffer(rescaled.tobytes(), np.uint8)
            if buffer_users[bias.buffer] > 1:  # shared with another tensor: give it its own
                model.buffers.append(type(model.buffers[bias.buffer])())
                bias.buffer = len(model.buffers) - 1
                buffer_users[bias.buffer] = 1
            model.buffers[bias.buffer].data = data
            bias.quantization.scale = (
                np.asarray(bias.quantization.scale, np.float64) * (new / old)
            ).astype(np.float32)
        repaired += len(new_scales)
    if not repaired:
        return bytes(model_bytes), 0
    return bytes(fbu.convert_object_to_bytearray(model)), repaired
