"""The residual epilogue: a fused attention op, the ADD of a shortcut and a ReLU as one op.

In a ResNet block the attention output goes straight into `Add([out, shortcut])` and a ReLU
(`keras_attn.models.resnet`; any functional model with that pattern). Converted, that is the
fused op, then an ADD (its ReLU usually fused into the ADD's activation, else a RELU op). The
fused ops' kernels can add the shortcut and apply the ReLU in their own output pass, which
saves XNNPACK one pass over the map (two reads and a write) and one partition boundary.

`fold_residual` rewrites a converted model: each fused op whose output only feeds such an ADD
(the other operand: a tensor of the map's shape and type) takes the shortcut as its second
input, gets `residual=1` (and `relu=1` when a ReLU follows) in its attributes and config
vector, and writes the ADD's (or the ReLU's) output tensor; the ADD and RELU ops go. For the
int8 variant the quantization vector gains the shortcut's scale and zero point, and the output
quantization becomes that of the ADD's (or ReLU's) output. On 1x1 maps the converter adds the
shortcut as a bias, through a RESHAPE to (C,): the op takes the RESHAPE's input instead, and the
RESHAPE goes too when nothing else reads it. See rust_core/src/litert/ops.rs for the kernels'
side.
"""

import numpy as np

from keras_attn.export.flatbuffer import _schema, flatbuffer_utils
from keras_attn.export.fused import ATTRIBUTE_KEYS, OP_NAMES
from keras_attn.export.fused_int8 import QUANTIZATION_KEYS, per_tensor_quantization

# The int8 variant's extra attributes when residual=1, after QUANTIZATION_KEYS, in the order of
# its quantization input; must match rust_core/src/litert/ops.rs.
RESIDUAL_QUANTIZATION_KEYS = ("residual_scale", "residual_zero_point")

_FLOAT32, _INT8, _INT32 = _schema.TensorType.FLOAT32, _schema.TensorType.INT8, _schema.TensorType.INT32
_NONE, _RELU = _schema.ActivationFunctionType.NONE, _schema.ActivationFunctionType.RELU


def _op_names(model):
    """Each main-subgraph op's builtin name, or its custom code for custom ops."""
    fbu = flatbuffer_utils()
    names = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex].customCode
        if code:
            names.append(code.decode() if isinstance(code, bytes) else code)
        else:
            names.append(fbu.opcode_to_name(model, op.opcodeIndex))
    return names


def _same_map(a, b):
    return a.type == b.type and np.array_equal(np.asarray(a.shape), np.asarray(b.shape))


def _constant(model, name, array):
    """Appends a tensor holding `array` (int32 or float32, 1-D) with its own buffer; its index."""
    model.buffers.append(_schema.BufferT())
    model.buffers[-1].data = np.frombuffer(array.tobytes(), np.uint8)
    tensor = _schema.TensorT()
    tensor.shape = np.array([array.size], np.int32)
    tensor.type = _INT32 if array.dtype == np.int32 else _FLOAT32
    tensor.buffer = len(model.buffers) - 1
    tensor.name = name.encode()
    model.subgraphs[0].tensors.append(tensor)
    return len(model.subgraphs[0].tensors) - 1


def _tensor_values(model, index, dtype):
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None or not len(data):
        return None
    return np.frombuffer(bytes(np.asarray(data, np.uint8)), dtype).copy()


def _epilogue(subgraph, names, producers, consumers, graph_io, k):
    """`(shortcut, output tensor, relu, ops folded)` for the fused op `k`, or None when its
    output does not feed a foldable ADD (+ RELU)."""
    op = subgraph.operators[k]
    tensors = subgraph.tensors
    x, y = int(op.inputs[0]), int(op.outputs[0])
    readers = consumers.get(y, [])
    if y in graph_io or len(readers) != 1 or names[readers[0]] != "ADD":
        return None
    add = subgraph.operators[readers[0]]
    operands = [int(t) for t in add.inputs]
    if len(operands) != 2 or operands.count(y) != 1:
        return None
    shortcut, out = operands[1 - operands.index(y)], int(add.outputs[0])
    if not (_same_map(tensors[y], tensors[x]) and _same_map(tensors[out], tensors[x])):
        return None
    activation = getattr(add.builtinOptions, "fusedActivationFunction", _NONE)
    if activation not in (_NONE, _RELU):
        return None
    folded = [readers[0]]
    reshape = producers.get(shortcut)
    if (not _same_map(tensors[shortcut], tensors[x]) and reshape is not None
            and names[reshape] == "RESHAPE"
            and np.prod(tensors[shortcut].shape) == np.prod(tensors[x].shape)):
        # On 1x1 maps the converter adds the shortcut as a bias: reshaped to (C,), broadcast.
        source = int(subgraph.operators[reshape].inputs[0])
        if consumers.get(shortcut) == [readers[0]] and shortcut not in graph_io:
            folded.insert(0, reshape)
        shortcut = source
    if not _same_map(tensors[shortcut], tensors[x]):
        return None
    relu = activation == _RELU
    after = consumers.get(out, [])
    if not relu and out not in graph_io and len(after) == 1 and names[after[0]] == "RELU":
        relu, out = True, int(subgraph.operators[after[0]].outputs[0])
        folded.append(after[0])
    return shortcut, out, relu, folded


def fold_residual(model_bytes):
    """Returns `(model bytes, number of fused ops given the residual epilogue)`: every fused op
    of `model_bytes` (unaligned `.tflite` bytes, float32 or int8 fused ops) whose output only
    feeds an ADD of a same-shape, same-type shortcut, optionally followed by a RELU (or with a
    fused RELU activation), takes that shortcut and computes the ADD and ReLU itself."""
    from flatbuffers import flexbuffers

    fbu = flatbuffer_utils()
    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    subgraph = model.subgraphs[0]
    tensors = subgraph.tensors
    names = _op_names(model)
    producers = {int(t): k for k, op in enumerate(subgraph.operators) for t in op.outputs}
    consumers = {}
    for k, op in enumerate(subgraph.operators):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(k)
    graph_io = {int(t) for t in subgraph.inputs} | {int(t) for t in subgraph.outputs}
    # Each folded op moves to the place of the last op it absorbs: its shortcut may be computed
    # after the fused op, but always before the ADD.
    moved, removed, taken = {}, set(), set()
    for k, op in enumerate(subgraph.operators):
        if names[k] not in OP_NAMES:
            continue
        found = _epilogue(subgraph, names, producers, consumers, graph_io, k)
        # Two blocks may meet in one ADD: the first takes the other's output as its shortcut.
        if found is None or any(i in moved or i in removed for i in found[3]) or found[0] in taken:
            continue
        shortcut, out, relu, folded = found
        x, y = int(op.inputs[0]), int(op.outputs[0])
        inputs = [int(t) for t in op.inputs]
        keys = ATTRIBUTE_KEYS[names[k]]
        config = _tensor_values(model, inputs[-1], np.int32)
        if config is None or config.size != len(keys):
            continue
        attributes = flexbuffers.Loads(bytes(op.customOptions))
        weights = inputs[1:-1]
        if tensors[x].type == _INT8:
            residual = per_tensor_quantization(tensors[shortcut])
            output = per_tensor_quantization(tensors[out])
            quantization = _tensor_values(model, weights[-1], np.float32)
            if residual is None or output is None or quantization is None or quantization.size != 4:
                continue
            values = (float(quantization[0]), int(quantization[1])) + output + residual
            weights[-1] = _constant(model, f"keras_attn/residual_quantization_{k}",
                                    np.array(values, np.float32))
            attributes.update(zip(QUANTIZATION_KEYS + RESIDUAL_QUANTIZATION_KEYS, values))
        config[keys.index("residual")], config[keys.index("relu")] = 1, int(relu)
        attributes.update(residual=1, relu=int(relu))
        op.inputs = np.array(
            [x, shortcut] + weights + [_constant(model, f"keras_attn/config_{k}", config)], np.int32
        )
        op.outputs = np.array([out], np.int32)
        op.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(attributes)), np.uint8)
        moved[folded[-1]] = k
        taken.add(y)
        removed.update(folded[:-1])
        removed.add(k)
    operators = subgraph.operators
    subgraph.operators = [
        operators[moved[i]] if i in moved else op
        for i, op in enumerate(operators) if i in moved or i not in removed
    ]
    return bytes(fbu.convert_object_to_bytearray(model)), len(moved)
