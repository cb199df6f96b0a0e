"""Running `.tflite` models in LiteRT with keras-attn's fused attention kernels.

`Runtime(path)` compiles a model with LiteRT's CompiledModel API on the CPU (XNNPACK runs the
builtin ops) and registers the Rust kernels of the custom ops that
`keras_attn.export.to_tflite(..., fused_attention=True)` emits (`KerasAttnCBAM`,
`KerasAttnSE`, `KerasAttnBAM`). LiteRT's C library is the one in the `ai-edge-litert` package.

Example:

>>> keras_attn.export.to_tflite(model, "cbam.tflite", fused_attention=True)  # doctest: +SKIP
>>> run = keras_attn.edge.Runtime("cbam.tflite", threads=2)  # doctest: +SKIP
>>> y = run(x)  # NumPy in, NumPy out  # doctest: +SKIP
"""

import os

import numpy as np

from keras_attn import _rust
from keras_attn.export.flatbuffer import read_tflite
from keras_attn.export.fused import OP_NAMES
from keras_attn.kernels import MAX_THREADS

#: The values of `Runtime`'s `gate_weights`.
GATE_WEIGHTS = ("float32", "int8")

__all__ = ["Runtime", "litert_library"]


def litert_library():
    """The path of `libLiteRt.so` in the installed `ai-edge-litert` package."""
    try:
        import ai_edge_litert
    except ImportError as err:
        raise ImportError(
            "keras_attn.edge needs LiteRT: pip install 'keras-attn[litert]' (ai-edge-litert)."
        ) from err
    path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
    if not os.path.isfile(path):
        raise ImportError(f"the installed ai-edge-litert has no LiteRT C library at {path!r}.")
    return path


class Runtime:
    """A `.tflite` model compiled by LiteRT for the CPU, with keras-attn's kernels registered.

    Args:
        path: the `.tflite` file (float32 or int8 inputs and outputs, fixed shapes).
        threads: CPU threads for XNNPACK and for our kernels; None lets LiteRT choose for
            XNNPACK and gives our kernels every core.
        gate_weights: what the fused ops' gate MLPs compute with on a float32 model:
            `"float32"` (the model's weights, the default) or `"int8"` (quantized per output
            channel when the model loads, as the int8 models' fused ops always compute): a
            quarter of the bytes to read at every run, which makes the float32 CBAM blocks of a
            ResNet-50 faster inside the network, at an error of about 1e-4 of the logits'
            scale (see docs/benchmarks.md). It does not change int8 models.

    Call it with one array per model input (or a single array): returns an array per output
    in the output's dtype (a list for several outputs). The batch size is free: a batch other
    than the model's runs in chunks of the model's batch (which its inputs and outputs must
    share), and an empty batch gives empty outputs. Thread-safe: one `Runtime` may be shared
    by several threads, whose calls take turns (LiteRT's compiled model holds one set of
    input and output buffers); for parallel calls, give each thread its own `Runtime`.
    A float32 input takes any real array (converted to float32); an int8 input (`input_dtypes`) takes already quantized values: an
    integer array within -128..127 (converted to int8), never floats, which would need the
    input's scale and zero point. The kernels check their attributes and inputs when the model
    is compiled and at every run; a problem raises `ValueError` with their message.
    """

    def __init__(self, path, threads=None, gate_weights="float32"):
        if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
            raise ValueError(f"`path`: no .tflite file at {path!r}.")
        if threads is not None and (
            isinstance(threads, bool)
            or not isinstance(threads, int)
            or not 1 <= threads <= MAX_THREADS
        ):
            raise ValueError(
                f"`threads` must be a positive int or None, at most {MAX_THREADS}; got {threads!r}."
            )
        if gate_weights not in GATE_WEIGHTS:
            raise ValueError(
                f"`gate_weights` must be one of {list(GATE_WEIGHTS)}; got {gate_weights!r}."
            )
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            data = f.read()
        # LiteRT does not verify the flatbuffer, and a corrupted one can crash it.
        try:
            _rust.verify_tflite(data)
        except ValueError as err:
            raise ValueError(f"`path`: {self.path!r} is not a valid .tflite model: {err}") from None
        unknown = sorted(set(read_tflite(data).custom_ops()) - set(OP_NAMES))
        if unknown:
            raise ValueError(
                f"`path`: the model needs custom ops {unknown} that keras-attn has no kernel for "
                f"(it provides {list(OP_NAMES)})."
            )
        self.threads = threads
        self.gate_weights = gate_weights
        # LiteRT compiles the bytes verified above, not the file, which may change meanwhile.
        self._runtime = _rust.LiteRtRuntime(
            litert_library(), data, self.path, threads, int8_gate_weights=gate_weights == "int8"
        )

    @property
    def input_shapes(self):
        """The fixed shape of every model input."""
        return [tuple(s) for s in self._runtime.input_shapes]

    @property
    def output_shapes(self):
        """The shape of every model output."""
        return [tuple(s) for s in self._runtime.output_shapes]

    @property
    def input_dtypes(self):
        """The NumPy dtype of every model input: `float32` or `int8`."""
        return [np.dtype(d) for d in self._runtime.input_dtypes]

    @property
    def output_dtypes(self):
        """The NumPy dtype of every model output: `float32` or `int8`."""
        return [np.dtype(d) for d in self._runtime.output_dtypes]

    @property
    def cached_blocks(self):
        """How many fused blocks are kept built between runs: one per fused node once the model
        has run, whose weights are then not re-read and re-packed (0 when some fused op takes
        weights that are not constants of the model, and so is rebuilt every run)."""
        return self._runtime.cached_blocks

    def take_timings(self):
        """Where the runs since the last call spent their time, then starts counting again.

        For profiling a model with fused attention inside a network: how much of LiteRT's run
        time the fused ops took, and how much of theirs went to reading and locking their
        tensor buffers rather than computing.

        Returns:
            A dict: `"model_seconds"`, the time spent running the model (every op, fused or
            not, without the copies of the inputs and outputs); `"ops"`, one dict per fused
            op name that ran, `{"calls", "buffer_seconds", "compute_seconds"}`; and
            `"by_shape"`, the same per op name and feature-map shape, keyed by
            `(name, shape)` with `shape` a tuple (such as `(1, 56, 56, 256)`), in the order
            they first ran.
        """
        model, entries = self._runtime.take_timings()
        ops, by_shape = {}, {}
        for name, shape, calls, buffers, compute in entries:
            if not calls:
                continue
            by_shape[(name, tuple(shape))] = {"calls": calls, "buffer_seconds": buffers, "compute_seconds": compute}
            total = ops.setdefault(name, {"calls": 0, "buffer_seconds": 0.0, "compute_seconds": 0.0})
            total["calls"] += calls
            total["buffer_seconds"] += buffers
            total["compute_seconds"] += compute
        return {"model_seconds": model, "ops": ops, "by_shape": by_shape}

    def __call__(self, inputs):
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        shapes = self.input_shapes
        if len(arrays) != len(shapes):
            raise ValueError(
                f"`inputs` must hold {len(shapes)} array(s), one per model input; got {len(arrays)}."
            )
        converted = []
        for i, (a, shape, dtype) in enumerate(zip(arrays, shapes, self.input_dtypes)):
            a = np.asarray(a)
            if dtype == np.int8:
                if not np.issubdtype(a.dtype, np.integer):
                    raise TypeError(
                        f"`inputs[{i}]` must be an int8 array of quantized values (the model "
                        f"input is int8); got dtype {a.dtype}."
                    )
                if a.dtype != np.int8 and a.size and (a.min() < -128 or a.max() > 127):
                    raise ValueError(
                        f"`inputs[{i}]` must hold int8 values in -128..127; got values in "
                        f"{a.min()}..{a.max()}."
                    )
            elif not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"`inputs[{i}]` must be a real-valued array; got dtype {a.dtype}.")
            if a.ndim != len(shape) or a.shape[1:] != shape[1:]:
                expected = ("any batch",) + shape[1:] if shape else shape
                raise ValueError(f"`inputs[{i}]` must have shape {expected}; got {a.shape}.")
            # Copied once when unaligned or not C-contiguous.
            converted.append(np.require(a, dtype, ["C_CONTIGUOUS", "ALIGNED"]))
        outputs = self._run_batch(converted)
        return outputs[0] if len(outputs) == 1 else outputs

    def _run_batch(self, arrays):
        """Runs inputs of any batch size, in chunks of the model's batch (the last one padded
        with zeros, its padding dropped from the outputs)."""
        exact = all(a.shape == s for a, s in zip(arrays, self.input_shapes))
        if exact or not all(self.input_shapes):  # the model's shapes, or a scalar input
            return self._runtime.run(arrays)
        count, batch = len(arrays[0]), self.input_shapes[0][0]
        if any(len(a) != count for a in arrays):
            raise ValueError(
                f"`inputs` must all have the same batch size; got {[len(a) for a in arrays]}."
            )
        same_batch = all(s[:1] == (batch,) for s in self.input_shapes + self.output_shapes)
        if not same_batch:
            raise ValueError(
                f"`inputs` must have the model's batch sizes {[s[0] for s in self.input_shapes]} "
                f"(its inputs and outputs do not share one batch dimension); got {count}."
            )
        parts = []
        for start in range(0, count, batch):
            chunk = [a[start : start + batch] for a in arrays]
            short = batch - len(chunk[0])
            if short:
                chunk = [
                    np.concatenate([c, np.zeros((short,) + c.shape[1:], c.dtype)]) for c in chunk
                ]
            parts.append([y[: batch - short] for y in self._runtime.run(chunk)])
        if not parts:
            shapes = zip(self.output_shapes, self.output_dtypes)
            return [np.zeros((0,) + s[1:], d) for s, d in shapes]
        return [np.concatenate(p) for p in zip(*parts)]

    def __repr__(self):
        return (
            f"Runtime({self.path!r}, threads={self.threads}, gate_weights={self.gate_weights!r})"
        )
