"""`to_tflite`: a LiteRT (TFLite) flatbuffer with builtin ops only, float or quantized."""

import contextlib
import dataclasses
import os
import re
import warnings

import numpy as np

from keras_attn.export._agreement import (
    CALIBRATION_SAMPLES, Agreement, measure, split_validation_data,
)
from keras_attn.export._files import atomic_output, check_target
from keras_attn.export._int8_forms import int8_forms
from keras_attn.export._ranges import widen_empty_ranges
from keras_attn.export.flatbuffer import read_tflite
from keras_attn.export.saved_model import check_model

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
IO_DTYPES = ("float32", "int8")


@dataclasses.dataclass(frozen=True)
class TFLiteReport:
    """What `to_tflite` wrote.

    Attributes:
        path: absolute path of the `.tflite` file.
        size_bytes: its size.
        quantization: the `quantization` it was converted with.
        op_counts: `{op name: count}`, most frequent first.
        input_dtypes: dtype names of the model inputs, e.g. `("int8",)`.
        output_dtypes: dtype names of the model outputs.
        agreement: for int8 (and any quantization given `validation_data`): an `Agreement`,
            the LiteRT model's outputs against Keras' (cosine, top-1 agreement, accuracy with
            labels); None when not measured.
    """

    path: str
    size_bytes: int
    quantization: str | None
    op_counts: dict
    input_dtypes: tuple
    output_dtypes: tuple
    agreement: Agreement | None = None

    def __str__(self):
        ops = ", ".join(f"{name} x{count}" for name, count in self.op_counts.items())
        text = (
            f"{os.path.basename(self.path)}: {self.size_bytes:,} bytes, "
            f"quantization={self.quantization}, inputs {'/'.join(self.input_dtypes)}, "
            f"outputs {'/'.join(self.output_dtypes)}; {sum(self.op_counts.values())} ops: {ops}"
        )
        return text if self.agreement is None else f"{text}\n{self.agreement}"


def _input_signature(model, batch_size):
    import tensorflow as tf

    if not getattr(model, "inputs", None):
        raise ValueError(
            "`input_signature` is required for a model without symbolic inputs (a subclassed "
            "model): pass a list of tf.TensorSpec, one per input."
        )
    return [
        tf.TensorSpec((batch_size,) + tuple(x.shape[1:]), x.dtype, name=x.name.split(":")[0])
        for x in model.inputs
    ]


def _calibration_array(data, name):
    """`data` as a float32 array, refusing what is not real numbers."""
    try:
        array = np.asarray(data)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name} must be an array of real numbers: {err}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must hold real numbers (float or integer); got dtype {array.dtype}."
        )
    return array.astype(np.float32, copy=False)


def _first_non_finite(array, name):
    """Raises a ValueError naming the first sample of `array` with a NaN or an infinity."""
    finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if not finite.all():
        index = int(np.argmin(finite))
        sample = array[index]
        kinds = [k for k, bad in (("NaN", np.isnan(sample)), ("inf", np.isposinf(sample)),
                                  ("-inf", np.isneginf(sample))) if bad.any()]
        raise ValueError(
            f"{name}: sample {index} holds {' and '.join(kinds)} "
            f"({int(np.size(sample) - np.isfinite(sample).sum())} of {np.size(sample)} values); "
            "calibration needs finite inputs (the quantizer derives its ranges from them)."
        )


def _sample_arrays(data, signature, argument):
    """Validates `data` (one real, finite, non-empty array of samples per model input, shaped
    like it; `argument` names it in errors) and returns it as a list of float32 arrays."""
    arrays = list(data) if isinstance(data, (list, tuple)) else [data]
    if len(arrays) != len(signature):
        raise ValueError(
            f"`{argument}` must hold one array per model input ({len(signature)}); "
            f"got {len(arrays)}."
        )
    several = len(arrays) > 1
    names = [f"`{argument}[{i}]`" if several else f"`{argument}`" for i in range(len(arrays))]
    arrays = [_calibration_array(a, name) for a, name in zip(arrays, names)]
    for a, spec in zip(arrays, signature):
        expected = tuple(spec.shape)[1:]
        if a.ndim != len(expected) + 1 or any(
            e is not None and e != g for e, g in zip(expected, a.shape[1:])
        ):
            raise ValueError(
                f"`{argument}` must have shape (num_samples, "
                f"{', '.join(str(d) for d in expected)}); got {a.shape}."
            )
    count = len(arrays[0])
    if any(len(a) != count for a in arrays):
        raise ValueError(f"`{argument}`: every input needs the same number of samples.")
    if count == 0 or arrays[0][0].size == 0:
        raise ValueError(
            f"`{argument}` is empty (shape {arrays[0].shape}); pass a few hundred "
            "typical inputs."
        )
    for a, name in zip(arrays, names):
        _first_non_finite(a, name)
    batch = signature[0].shape[0] or 1
    if count < batch:
        raise ValueError(
            f"`{argument}` needs at least one full batch ({batch} samples); got {count}."
        )
    return arrays


def _calibration_batches(representative_data, signature):
    """Validates `representative_data` and returns a generator function over its batches.
    Every int8 export, builtin or fused, calibrates through this function."""
    arrays = _sample_arrays(representative_data, signature, "representative_data")
    batch, count = signature[0].shape[0] or 1, len(arrays[0])

    def batches():
        for start in range(0, count - batch + 1, batch):
            yield [a[start : start + batch] for a in arrays]

    return batches


def _agreement_samples(validation_data, representative_data, quantization, signature):
    """`(input arrays, labels, on calibration data)` to compare the export on, or None."""
    if validation_data is not None:
        inputs, labels = split_validation_data(validation_data)
        arrays = _sample_arrays(inputs, signature, "validation_data")
        if labels is not None and len(labels) != len(arrays[0]):
            raise ValueError(
                f"`validation_data`: {len(labels)} labels for {len(arrays[0])} samples."
            )
        return arrays, labels, False
    if quantization != "int8":
        return None
    arrays = _sample_arrays(representative_data, signature, "representative_data")
    batch = signature[0].shape[0] or 1
    count = max(batch, CALIBRATION_SAMPLES // batch * batch)
    return [a[:count] for a in arrays], None, True


def _can_measure(validation_data, fused_attention, io_dtype):
    """Whether the export can be run here to compare it with Keras; `validation_data` asks
    for it, so a missing LiteRT is then an error rather than a silent skip."""
    if fused_attention and io_dtype == "int8":  # the fused runtime takes quantized inputs
        if validation_data is not None:
            raise ValueError(
                "`validation_data` needs io_dtype='float32' with fused_attention: the fused "
                "runtime takes already quantized int8 inputs."
            )
        return False
    if validation_data is not None:
        return True
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        return False
    return True


def _converter_options(quantization, calibration, io_dtype, signature):
    import tensorflow as tf

    builtins = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    if quantization is None:
        return {"target_spec": builtins}
    if quantization == "float16":
        return {
            "target_spec": dict(builtins, supported_types=[tf.float16]),
            "optimizations": [tf.lite.Optimize.DEFAULT],
        }
    if quantization == "dynamic":
        return {"target_spec": builtins, "optimizations": [tf.lite.Optimize.DEFAULT]}
    io_type = tf.int8 if io_dtype == "int8" else tf.float32
    return {
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": calibration,
        "inference_input_type": io_type,
        "inference_output_type": io_type,
    }


def _conversion_failure(err, quantization):
    text = str(err)
    needs = re.findall(r"(TF Select ops|Custom ops): ([^\n]+)", text)
    if needs:
        reason = "; ".join(f"{kind}: {ops}" for kind, ops in dict(needs).items())
        reason = f"it needs ops that are not TFLite builtins ({reason})"
    else:
        reason = "the converter failed: " + "\n".join(text.strip().splitlines()[:12])
    return ValueError(
        f"`model` cannot be converted to TFLite with builtin ops only "
        f"(quantization={quantization!r}): {reason}. Replace those operations in the model "
        "with keras.ops that have TFLite builtins."
    )


def _fused_selection(fused_attention, quantization):
    """`select(layer, op name, input shape)` for `fused.fused_layers` from `fused_attention`:
    every block for True, those that pay for "auto", the named block families, or the user's
    predicate."""
    from keras_attn.export.fused import FAMILIES, auto_fuses

    if fused_attention is True:
        return lambda layer, op, shape: True
    if isinstance(fused_attention, str) and fused_attention == "auto":
        precision = "int8" if quantization == "int8" else "float32"
        return lambda layer, op, shape: auto_fuses(op, shape, precision)
    if callable(fused_attention):
        return lambda layer, op, shape: bool(fused_attention(layer, shape))
    names = [fused_attention] if isinstance(fused_attention, str) else fused_attention
    try:
        names = list(names)
    except TypeError:
        names = None
    if not names or any(not isinstance(n, str) or n.lower() not in FAMILIES for n in names):
        raise ValueError(
            f"`fused_attention` must be True, False, \"auto\", a non-empty list of block families "
            f"among {sorted(FAMILIES)} or a callable f(layer, input_shape); got "
            f"{fused_attention!r}."
        )
    ops = {FAMILIES[n.lower()] for n in names}
    return lambda layer, op, shape: op in ops


def to_tflite(
    model,
    path,
    quantization=None,
    representative_data=None,
    *,
    io_dtype="float32",
    batch_size=1,
    input_signature=None,
    fused_attention=False,
    validation_data=None,
):
    """Converts `model` to a LiteRT (TFLite) model that uses builtin ops only.

    Conversion goes through Keras' own exporter (`model.export(format="litert")`, i.e. a
    SavedModel and `tf.lite.TFLiteConverter`) restricted to TFLite builtins: a model that would
    need Flex (TF Select) or custom ops is refused with a `ValueError` naming those ops, and
    nothing is written. The file appears only once complete (temporary file, then rename).

    The batch dimension is fixed (`batch_size=1` by default, as on a device): with a fixed batch
    the converter turns a dilated `Conv2D` (BAM's spatial gate) into one native dilated
    `CONV_2D`; with `batch_size=None` it stays `SPACE_TO_BATCH_ND` + `CONV_2D` +
    `BATCH_TO_SPACE_ND`, which XNNPACK does not take. Height and width stay as the model
    declares them: `(None, None, C)` inputs give a model that LiteRT resizes at run time (see
    docs/deployment.md).

    Args:
        model: a built `keras.Model` (TensorFlow backend).
        path: the `.tflite` file to write (missing parent folders are created too).
        quantization: `None` (float32), `"float16"` (float16 weights, float32 compute),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full-integer weights and
            activations, calibrated on `representative_data`; the spatial gates of
            SpatialAttention and CBAM convolve their channel max and mean separately, so that
            each keeps its own int8 scale: see `keras_attn.export._int8_forms`).
        representative_data: for `"int8"` only: a float array of samples shaped like the model
            input, `(num_samples, H, W, C)` (a list of arrays for several inputs). A few hundred
            typical inputs calibrate well. Every value must be finite: a `ValueError` names the
            first sample with a NaN or an infinity, before anything is converted.
        io_dtype: for `"int8"` only: `"float32"` keeps float inputs and outputs (quantized inside
            the model), `"int8"` makes them int8 (quantize with the input tensor's scale and
            zero point).
        batch_size: the fixed batch dimension, or `None` for a dynamic one.
        input_signature: list of `tf.TensorSpec`, one per input, overriding `batch_size` and
            the model's input shapes.
        fused_attention: if True (quantization None or "int8"), every channels_last CBAM,
            ChannelAttention, SpatialAttention, SqueezeExcite and BAM becomes one LiteRT custom
            op (`KerasAttnCBAM`, `KerasAttnSE`, `KerasAttnBAM`) run by keras-attn's Rust kernels
            through `keras_attn.edge.Runtime` (see `keras_attn.export.fused`); the file's
            buffers are 64-byte aligned as LiteRT requires. With "int8" the model is
            calibrated through those kernels and the ops take and give int8 maps (see
            `keras_attn.export.fused_int8`); this needs `ai-edge-litert`. A fused block whose
            output only feeds an `Add` with a shortcut, and then a ReLU or not (a ResNet
            block), also computes the addition and the ReLU (see
            `keras_attn.export.fused_residual`). "auto" fuses only the blocks that were
            measured faster fused than as builtin ops inside a ResNet, by block type, precision
            and map size: CBAM and its gates on maps of 7x7 and larger; SE, BAM and CBAM
            on smaller maps stay builtin (`keras_attn.export.fused.AUTO_MIN_PIXELS`, and
            docs/deployment.md for the measurements). A list of block families among "cbam"
            (CBAM and its gates), "se" and "bam" fuses only those, and a callable
            `f(layer, input_shape) -> bool` only the blocks it accepts; the others stay
            builtin. False (default): builtins only.
        validation_data: held-out inputs (like `representative_data`), or a tuple
            `(inputs, labels)` with integer class labels, on which the report compares the
            exported model with Keras (`TFLiteReport.agreement`: cosine, top-1 agreement and,
            with labels, accuracy). Without it, an int8 export is compared on up to 32
            calibration samples. Needs `ai-edge-litert`; an int8 export without it, or fused
            with int8 inputs and outputs, is not compared.

    Returns:
        A `TFLiteReport` with the path, size in bytes, op counts and agreement with Keras.

    Example:

    >>> report = to_tflite(  # doctest: +SKIP
    ...     model, "cnn_int8.tflite", "int8", representative_data=x_train[:200])
    >>> print(report)  # doctest: +SKIP
    cnn_int8.tflite: 61,344 bytes, quantization='int8', inputs float32, outputs float32; ...
    """
    check_model(model)
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}; got {quantization!r}."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "`representative_data` is required for quantization='int8': pass a few hundred "
            "typical inputs to calibrate the activation ranges."
        )
    if quantization != "int8" and representative_data is not None:
        raise ValueError(
            f"`representative_data` is only used with quantization='int8'; got "
            f"quantization={quantization!r}."
        )
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"`io_dtype` must be one of {IO_DTYPES}; got {io_dtype!r}.")
    if io_dtype != "float32" and quantization != "int8":
        raise ValueError(
            f"`io_dtype={io_dtype!r}` needs quantization='int8'; got {quantization!r}."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be a positive int or None; got {batch_size!r}.")
    select = None if fused_attention is False else _fused_selection(fused_attention, quantization)
    if fused_attention and quantization not in (None, "int8"):
        raise ValueError(
            f"`fused_attention=True` supports quantization=None (float32) and 'int8'; got "
            f"quantization={quantization!r}."
        )
    path = check_target(path)
    signature = input_signature or _input_signature(model, batch_size)
    samples = _agreement_samples(validation_data, representative_data, quantization, signature)
    # A fused int8 model is quantized after conversion, by keras_attn.export.fused_int8.
    fused_int8 = fused_attention and quantization == "int8"
    calibration = (
        _calibration_batches(representative_data, signature) if quantization == "int8" else None
    )
    options = _converter_options(
        None if fused_int8 else quantization, calibration, io_dtype, signature
    )
    allowed_custom = ()
    if fused_attention:
        from keras_attn.export import fused

        options["allow_custom_ops"] = True
        allowed_custom = fused.OP_NAMES

    from tensorflow.lite.python.convert_phase import ConverterError

    with atomic_output(path, suffix="" if path.endswith(".tflite") else ".tflite") as tmp:
        try:
            with contextlib.ExitStack() as swaps:
                if quantization == "int8":  # first: the layers left unfused fall back to it
                    swaps.enter_context(int8_forms(model))
                if fused_attention:
                    swaps.enter_context(fused.fused_layers(model, select))
                model.export(
                    tmp, format="litert", input_signature=signature, verbose=False, **options
                )
        except ConverterError as err:
            raise _conversion_failure(err, quantization) from err
        with open(tmp, "rb") as f:
            exported = data = f.read()
        if fused_int8:
            from keras_attn.export import fused_int8 as int8

            data = int8.quantize(int8.calibrate(data, calibration()), io_dtype)
        if quantization == "int8":
            data, _ = widen_empty_ranges(data)
        if fused_int8:
            data, _ = int8.fold_quantization(data)
        if fused_attention:
            from keras_attn.export.fused_residual import fold_residual

            data, _ = fold_residual(data)
            data = fused.align_buffers(data)
        if data != exported:  # rewrite only what post-processing changed
            with open(tmp, "wb") as f:
                f.write(data)
        graph = read_tflite(tmp)
        if set(graph.custom_ops()) - set(allowed_custom):
            raise ValueError(
                f"`model` converted with non-builtin ops {graph.custom_ops()}; only TFLite "
                "builtins are allowed."
            )
        # "auto" keeping every block builtin is its choice, not a surprise.
        if fused_attention and fused_attention != "auto" and not graph.custom_ops():
            warnings.warn(
                f"to_tflite(fused_attention={fused_attention!r}): no layer of `model` was fused "
                "(it has no channels_last CBAM, ChannelAttention, SpatialAttention, "
                "SqueezeExcite or BAM layer that the selection accepts), so the file has "
                "builtin ops only.",
                stacklevel=2,
            )
        size = os.path.getsize(tmp)
        agreement = None
        if samples is not None and _can_measure(validation_data, fused_attention, io_dtype):
            agreement = measure(model, tmp, *samples, fused=bool(fused_attention))
    return TFLiteReport(
        path=path,
        size_bytes=size,
        quantization=quantization,
        op_counts=graph.op_counts(),
        input_dtypes=tuple(t.lower() for t in graph.input_types),
        output_dtypes=tuple(t.lower() for t in graph.output_types),
        agreement=agreement,
    )
