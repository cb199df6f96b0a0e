"""int8 models with fused attention ops: calibrated through keras-attn's own kernels.

TensorFlow's converter calibrates an int8 model by running the float model in its own
interpreter, which has no kernel for our custom ops ("unresolved custom op"). So
`to_tflite(..., "int8", fused_attention=True)` converts the float fused model and quantizes it
in three steps of its own:

1. `calibrate`: a copy of the float model whose every activation is a model output runs the
   representative data in `keras_attn.edge.Runtime` (XNNPACK + the fused Rust kernels); each
   activation's min and max over all batches are written into the float model's tensors, as
   TensorFlow's calibrator writes them.
2. TensorFlow's MLIR quantizer (`mlir_quantize`, the converter's own second step) quantizes every
   builtin op. It leaves the custom ops in float between a DEQUANTIZE and a QUANTIZE.
3. `fold_quantization`: each fused op whose input comes from a DEQUANTIZE and whose output only
   feeds a QUANTIZE takes the int8 tensors directly, with the two scales and zero points as a
   float32 input before its config vector and as attributes (the int8 variant of the ops; see
   rust_core/src/litert/ops.rs). The kernel dequantizes, applies the block and requantizes in
   its own passes, so the map crosses memory as int8.
"""

import os
import tempfile

import numpy as np

from keras_attn.export.flatbuffer import _schema, flatbuffer_utils
from keras_attn.export.fused import OP_NAMES, align_buffers

_FLOAT32, _INT8 = _schema.TensorType.FLOAT32, _schema.TensorType.INT8
# The int8 variant's extra attributes, in the order of its quantization input; must match
# rust_core/src/litert/ops.rs (QUANTIZATION_KEYS).
QUANTIZATION_KEYS = ("input_scale", "input_zero_point", "output_scale", "output_zero_point")


def _holds_data(model, tensor):
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _activations(model):
    """Indices of the main subgraph's float32 tensors computed by its ops."""
    subgraph = model.subgraphs[0]
    computed = {i for op in subgraph.operators for i in op.outputs}
    return [
        i for i, t in enumerate(subgraph.tensors)
        if i in computed and t.type == _FLOAT32 and not _holds_data(model, t)
    ]


def calibrate(float_model, batches, threads=None):
    """Returns `float_model` (unaligned `.tflite` bytes) with the min and max of every float
    activation and input over `batches` (an iterable of lists of arrays, one per model input),
    computed by `keras_attn.edge.Runtime`."""
    from keras_attn.edge import Runtime

    fbu = flatbuffer_utils()
    probe = fbu.read_model_from_bytearray(bytearray(float_model))
    subgraph = probe.subgraphs[0]
    activations = _activations(probe)
    subgraph.outputs = np.array(activations, np.int32)
    # Without signatures LiteRT takes the subgraph's inputs and outputs as the signature.
    probe.signatureDefs = []
    low, high = {}, {}

    def update(index, value):
        value = np.asarray(value, np.float32)
        finite = value[np.isfinite(value)]
        if finite.size:
            low[index] = min(low.get(index, np.inf), float(finite.min()))
            high[index] = max(high.get(index, -np.inf), float(finite.max()))

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "calibration.tflite")
        with open(path, "wb") as f:
            f.write(align_buffers(bytes(fbu.convert_object_to_bytearray(probe))))
        runtime = Runtime(path, threads=threads)
        for batch in batches:
            for index, value in zip(subgraph.inputs, batch):
                update(int(index), value)
            for index, value in zip(activations, runtime(batch) if len(activations) > 1
                                    else [runtime(batch)]):
                update(index, value)
        del runtime
    model = fbu.read_model_from_bytearray(bytearray(float_model))
    for index in low:
        stats = _schema.QuantizationParametersT()
        stats.min = np.array([low[index]], np.float32)
        stats.max = np.array([high[index]], np.float32)
        model.subgraphs[0].tensors[index].quantization = stats
    return bytes(fbu.convert_object_to_bytearray(model))


def quantize(calibrated_model, io_dtype):
    """TensorFlow's MLIR quantizer on a calibrated float model (int8 weights and activations,
    per-channel weights); `io_dtype` "float32" or "int8" for the model's inputs and outputs."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    io_type = tf.int8 if io_dtype == "int8" else tf.float32
    return bytes(
        convert.mlir_quantize(calibrated_model, input_data_type=io_type, output_data_type=io_type)
    )


def per_tensor_quantization(tensor):
    """`(scale, zero point)` of a per-tensor quantized int8 tensor, else None."""
    q = tensor.quantization
    if tensor.type != _INT8 or q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


def fold_quantization(model_bytes):
    """Returns `(model bytes, number of fused ops made int8)`: every DEQUANTIZE -> fused op ->
    QUANTIZE chain of `model_bytes` (unaligned, as `quantize` returns it) becomes the int8
    variant of the fused op."""
    from flatbuffers import flexbuffers

    fbu = flatbuffer_utils()
    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    subgraph = model.subgraphs[0]
    tensors = subgraph.tensors
    names = [fbu.opcode_to_name(model, op.opcodeIndex) for op in subgraph.operators]
    custom = [
        model.operatorCodes[op.opcodeIndex].customCode for op in subgraph.operators
    ]
    producer = {t: k for k, op in enumerate(subgraph.operators) for t in op.outputs}
    consumers = {}
    for k, op in enumerate(subgraph.operators):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(k)
    graph_io = {int(t) for t in subgraph.inputs} | {int(t) for t in subgraph.outputs}
    removed, folded = set(), 0
    for k, op in enumerate(subgraph.operators):
        code = custom[k].decode() if isinstance(custom[k], bytes) else custom[k]
        if code not in OP_NAMES:
            continue
        x_float, y_float = int(op.inputs[0]), int(op.outputs[0])
        dequantize = producer.get(x_float)
        readers = consumers.get(y_float, [])
        if (dequantize is None or names[dequantize] != "DEQUANTIZE" or len(readers) != 1
                or names[readers[0]] != "QUANTIZE" or y_float in graph_io):
            continue
        x_int8 = int(subgraph.operators[dequantize].inputs[0])
        y_int8 = int(subgraph.operators[readers[0]].outputs[0])
        params_in = per_tensor_quantization(tensors[x_int8])
        params_out = per_tensor_quantization(tensors[y_int8])
        if params_in is None or params_out is None:
            continue
        values = params_in + params_out
        model.buffers.append(_schema.BufferT())
        model.buffers[-1].data = np.frombuffer(np.array(values, np.float32).tobytes(), np.uint8)
        quantization = _schema.TensorT()
        quantization.shape = np.array([4], np.int32)
        quantization.type = _FLOAT32
        quantization.buffer = len(model.buffers) - 1
        quantization.name = f"keras_attn/quantization_{k}".encode()
        tensors.append(quantization)
        inputs = [int(t) for t in op.inputs]
        op.inputs = np.array([x_int8] + inputs[1:-1] + [len(tensors) - 1, inputs[-1]], np.int32)
        op.outputs = np.array([y_int8], np.int32)
        attributes = flexbuffers.Loads(bytes(op.customOptions))
        attributes.update(zip(QUANTIZATION_KEYS, values))
        op.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(attributes)), np.uint8)
        removed.add(readers[0])
        if consumers.get(x_float) == [k] and x_float not in graph_io:
            removed.add(dequantize)
        folded += 1
    subgraph.operators = [op for k, op in enumerate(subgraph.operators) if k not in removed]
    return bytes(fbu.convert_object_to_bytearray(model)), folded
