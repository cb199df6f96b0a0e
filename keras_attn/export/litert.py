"""`LiteRTModel`: runs a `.tflite` model with LiteRT's interpreter (`ai_edge_litert`)."""

import os
import threading

import numpy as np

from keras_attn.export.flatbuffer import read_tflite


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError as err:
        raise ImportError(
            "Running .tflite models needs the LiteRT runtime: pip install 'keras-attn[litert]' "
            "(the ai-edge-litert package)."
        ) from err
    return interpreter


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.round(x / scale) + zero_point
    q = np.where(np.isnan(q), zero_point, q)  # NaN has no integer: it becomes 0.0, as documented
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def _dequantize(q, detail):
    scale, zero_point = detail["quantization"]
    return (q.astype(np.float32) - zero_point) * scale


class LiteRTModel:
    """A `.tflite` model in LiteRT's interpreter, called on NumPy arrays like a Keras model.

    Float inputs are quantized for integer (int8) model inputs and integer outputs are
    dequantized, so int8-I/O and float-I/O models are called the same way. An int8 value cannot
    hold a NaN or an infinity: a NaN input value is quantized as 0.0 (the input's zero point) and
    +-inf saturates to the int8 range (like any value beyond it), so such an input gives finite,
    meaningless outputs; check inputs with `np.isfinite` where they may hold them.

    Inputs larger than the model's fixed batch dimension run in chunks; dynamic dimensions (`-1`
    in the model, e.g. from `(None, None, C)` Keras inputs) are resized to each call's shape.

    Thread-safe: one instance may be shared by several threads. LiteRT's interpreter is not
    (its tensors are the calls' shared state), so calls take turns on a lock; for calls that
    run in parallel, give each thread its own `LiteRTModel` (or use `keras_attn.edge.Runtime`,
    likewise serialised). An empty batch returns empty outputs of shape `(0, ...)`.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads (`None`: LiteRT's default).
        use_xnnpack: apply LiteRT's default XNNPACK delegate (the fast CPU path). `False` runs
            LiteRT's builtin kernels only, e.g. as a reference.

    Example:

    >>> model = LiteRTModel("cnn_int8.tflite")  # doctest: +SKIP
    >>> probabilities = model(images)  # doctest: +SKIP
    >>> model.delegate_partitions  # 1: XNNPACK runs the whole graph  # doctest: +SKIP
    """

    def __init__(self, path, num_threads=None, use_xnnpack=True):
        if not os.path.isfile(path):
            raise ValueError(f"`path`: no .tflite file at {os.fspath(path)!r}.")
        litert = _interpreter_module()
        resolver = (
            litert.OpResolverType.AUTO
            if use_xnnpack
            else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.path = os.fspath(path)
        self._interpreter = litert.Interpreter(
            model_path=self.path,
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
        )
        self._interpreter.allocate_tensors()
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        # Held by every call: resizing, setting, invoking and reading must not interleave.
        self._lock = threading.Lock()

    @property
    def input_details(self):
        """LiteRT's input details (name, shape, shape_signature, dtype, quantization)."""
        return self._interpreter.get_input_details()

    @property
    def output_details(self):
        """LiteRT's output details."""
        return self._interpreter.get_output_details()

    def _delegate_nodes(self):
        # The interpreter lists each partition handed to a delegate as one node named DELEGATE.
        return [n for n in self._interpreter._get_ops_details() if n["op_name"] == "DELEGATE"]

    @property
    def delegate_partitions(self):
        """How many partitions the delegate (XNNPACK) took; 1 is the whole graph at best."""
        return len(self._delegate_nodes())

    def fully_delegated(self):
        """True when one delegate partition runs the whole graph: from the model inputs (and
        constants) to every model output, with no op left to LiteRT's own kernels."""
        nodes = self._delegate_nodes()
        if len(nodes) != 1:
            return False
        graph = read_tflite(self.path)
        node_inputs = {int(i) for i in nodes[0]["inputs"] if i >= 0}
        allowed = set(graph.inputs) | set(graph.constant_tensors)
        return node_inputs <= allowed and set(graph.outputs) <= set(nodes[0]["outputs"])

    def _run_chunk(self, chunk):
        if any(tuple(d["shape"]) != x.shape for x, d in zip(chunk, self._inputs)):
            for x, detail in zip(chunk, self._inputs):
                self._interpreter.resize_tensor_input(detail["index"], x.shape, strict=True)
            self._interpreter.allocate_tensors()
            self._inputs = self._interpreter.get_input_details()
            self._outputs = self._interpreter.get_output_details()
        for x, detail in zip(chunk, self._inputs):
            if np.issubdtype(detail["dtype"], np.integer):
                x = _quantize(x, detail)
            self._interpreter.set_tensor(detail["index"], x.astype(detail["dtype"], copy=False))
        self._interpreter.invoke()
        results = []
        for detail in self._outputs:
            y = self._interpreter.get_tensor(detail["index"])
            if np.issubdtype(detail["dtype"], np.integer):
                y = _dequantize(y, detail)
            results.append(np.array(y, dtype=np.float32))
        return results

    def __call__(self, inputs):
        """Runs the model.

        Args:
            inputs: a float array shaped like the model input (any batch size), or a list of
                arrays in the order of `input_details` for several inputs.

        Returns:
            A float32 array (a list of arrays for several outputs).
        """
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(arrays) != len(self._inputs):
            raise ValueError(
                f"`inputs` must hold {len(self._inputs)} array(s), one per model input; "
                f"got {len(arrays)}."
            )
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        for a, detail in zip(arrays, self._inputs):
            signature = tuple(detail["shape_signature"])
            if a.ndim != len(signature) or any(
                s != -1 and s != d for s, d in zip(signature[1:], a.shape[1:])
            ):
                expected = ", ".join("None" if s == -1 else str(s) for s in signature)
                raise ValueError(
                    f"`inputs`: expected an array of shape ({expected}) with any batch size; "
                    f"got {a.shape}."
                )
        count = len(arrays[0])
        batch = int(self._inputs[0]["shape_signature"][0])
        if batch == -1:
            batch = max(count, 1)
        outputs = []
        with self._lock:
            # An empty batch runs one chunk of padding, so that the outputs get their shapes.
            for start in range(0, max(count, 1), batch):
                chunk = [a[start : start + batch] for a in arrays]
                short = batch - len(chunk[0])
                if short:  # fixed batch dimension: pad the last chunk, drop the padding after.
                    chunk = [np.concatenate([c, np.zeros((short,) + c.shape[1:], c.dtype)])
                             for c in chunk]
                results = self._run_chunk(chunk)
                outputs.append([r[: batch - short] for r in results])
        merged = [np.concatenate(parts) for parts in zip(*outputs)]
        return merged[0] if len(merged) == 1 else merged
