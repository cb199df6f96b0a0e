"""Read-only inspection of a `.tflite` flatbuffer: which ops it holds, on which tensor types.

Used by `to_tflite` to refuse Flex and custom ops and to report op counts, and by tests to check
that every op is one XNNPACK takes and that int8 models hold no float islands.
"""

import collections
import dataclasses
import os
import struct

try:  # LiteRT's own copy of the schema, when the `litert` extra is installed.
    from ai_edge_litert import schema_py_generated as _schema
except ImportError:  # TensorFlow ships the same generated schema.
    try:
        from tensorflow.lite.python import schema_py_generated as _schema
    except ImportError as err:
        raise ImportError(
            "reading .tflite files needs LiteRT (pip install ai-edge-litert) or TensorFlow."
        ) from err


def flatbuffer_utils():
    """LiteRT's (or else TensorFlow's) `flatbuffer_utils`: the schema's object API helpers."""
    try:
        from ai_edge_litert.tools import flatbuffer_utils as utils
    except ImportError:
        from tensorflow.lite.tools import flatbuffer_utils as utils
    return utils

_BUILTIN_NAMES = {
    code: name for name, code in vars(_schema.BuiltinOperator).items() if not name.startswith("_")
}
_TENSOR_TYPE_NAMES = {
    code: name for name, code in vars(_schema.TensorType).items() if not name.startswith("_")
}


@dataclasses.dataclass(frozen=True)
class TFLiteOp:
    """One operator of a `.tflite` model.

    Attributes:
        name: builtin name (`"CONV_2D"`) or, for custom ops, the custom code (`"FlexConv2D"`).
        is_custom: True for custom ops, Flex (TF Select) ops included.
        input_types: tensor type names of the non-constant inputs (`"INT8"`, `"FLOAT32"`, ...).
        output_types: tensor type names of the outputs.
        inputs: tensor indices of all inputs (constants included; -1 for an absent optional one).
        outputs: tensor indices of the outputs.
        subgraph: index of the subgraph that holds the op.
    """

    name: str
    is_custom: bool
    input_types: tuple
    output_types: tuple
    inputs: tuple
    outputs: tuple
    subgraph: int

    @property
    def is_flex(self):
        """True for a TensorFlow op carried by the Flex delegate (needs the TF Select runtime)."""
        return self.is_custom and self.name.startswith("Flex")


@dataclasses.dataclass(frozen=True)
class TFLiteGraph:
    """What `read_tflite` found in a model.

    Attributes:
        ops: every `TFLiteOp`, subgraph by subgraph, in execution order.
        constant_tensors: indices of the main subgraph's tensors that hold data (weights).
        inputs: tensor indices of the main subgraph's inputs.
        outputs: tensor indices of the main subgraph's outputs.
        input_types: tensor type names of those inputs (`"FLOAT32"`, `"INT8"`, ...).
        output_types: tensor type names of those outputs.
    """

    ops: tuple
    constant_tensors: frozenset
    inputs: tuple
    outputs: tuple
    input_types: tuple
    output_types: tuple

    def op_counts(self):
        """`{op name: count}` over all subgraphs, most frequent first."""
        return dict(collections.Counter(op.name for op in self.ops).most_common())

    def custom_ops(self):
        """Names of the custom and Flex ops, sorted and without repeats."""
        return sorted({op.name for op in self.ops if op.is_custom})


def _load_bytes(model):
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            return f.read()
    raise TypeError(
        f"`model` must be a path to a .tflite file or its bytes; got {type(model).__name__}."
    )


def read_tflite(model):
    """Lists the operators of a `.tflite` model, from a path or the model's bytes.

    Args:
        model: path to a `.tflite` file, or the flatbuffer's bytes.

    Returns:
        A `TFLiteGraph`.

    Raises:
        ValueError: naming the file (or "the bytes given") when they are not a readable TFLite
            flatbuffer. This reader is pure Python and never crashes on corrupt bytes, but it
            does not verify the whole file: `keras_attn.edge.Runtime` does that before LiteRT
            reads it.

    Example:

    >>> graph = read_tflite("model.tflite")  # doctest: +SKIP
    >>> graph.op_counts()  # doctest: +SKIP
    {'CONV_2D': 3, 'MUL': 2, ...}
    """
    data = _load_bytes(model)
    source = repr(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else "the bytes given"
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"`model`: {source} is not a TFLite flatbuffer (no 'TFL3' identifier).")
    try:
        return _read_graph(data)
    except (
        struct.error, IndexError, KeyError, UnicodeDecodeError, TypeError, AttributeError,
        OverflowError, ValueError,
    ) as err:
        # What the generated reader raises when an offset or a count in the file is corrupt.
        raise ValueError(
            f"`model`: {source} is not a valid TFLite flatbuffer ({type(err).__name__}: {err})."
        ) from None


def _read_graph(data):
    root = _schema.Model.GetRootAs(data, 0)
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == _schema.BuiltinOperator.CUSTOM:
            codes.append((code.CustomCode().decode(), True))
        else:
            codes.append((_BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}"), False))

    def buffer_holds_data(index):
        buffer = root.Buffers(index)
        # Offset > 1: data stored after the flatbuffer (models over 2 GB); 1 is a placeholder.
        return buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1)

    ops = []
    main_constants = main_types = None
    for s in range(root.SubgraphsLength()):
        subgraph = root.Subgraphs(s)
        types = []
        constants = set()
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            types.append(_TENSOR_TYPE_NAMES.get(tensor.Type(), str(tensor.Type())))
            if tensor.Buffer() > 0 and buffer_holds_data(tensor.Buffer()):
                constants.add(t)
        if main_constants is None:
            main_constants, main_types = frozenset(constants), types
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            name, is_custom = codes[op.OpcodeIndex()]
            inputs = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
            outputs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            ops.append(
                TFLiteOp(
                    name=name,
                    is_custom=is_custom,
                    input_types=tuple(types[i] for i in inputs if i >= 0 and i not in constants),
                    output_types=tuple(types[i] for i in outputs),
                    inputs=inputs,
                    outputs=outputs,
                    subgraph=s,
                )
            )
    main = root.Subgraphs(0)
    inputs = tuple(int(i) for i in main.InputsAsNumpy())
    outputs = tuple(int(i) for i in main.OutputsAsNumpy())
    return TFLiteGraph(
        ops=tuple(ops),
        constant_tensors=main_constants,
        inputs=inputs,
        outputs=outputs,
        input_types=tuple(main_types[i] for i in inputs),
        output_types=tuple(main_types[i] for i in outputs),
    )
