"""How closely a quantized `.tflite` model follows the Keras model it was exported from."""

import dataclasses

import numpy as np

# Without `validation_data`, agreement is measured on this many calibration samples.
CALIBRATION_SAMPLES = 32


@dataclasses.dataclass(frozen=True)
class Agreement:
    """The LiteRT model's outputs against Keras' on the same inputs.

    Attributes:
        samples: how many inputs were compared.
        on_calibration_data: True when they are calibration samples (no `validation_data`),
            which flatters the figures a little.
        cosine: cosine similarity of all outputs, flattened, with Keras' (1.0: identical
            up to scale).
        top1_agreement: for one `(batch, classes)` output: the fraction of inputs whose argmax
            is Keras' argmax; else None.
        keras_accuracy, litert_accuracy: with labels: the top-1 accuracy of each; else None.
    """

    samples: int
    on_calibration_data: bool
    cosine: float
    top1_agreement: float | None = None
    keras_accuracy: float | None = None
    litert_accuracy: float | None = None

    def __str__(self):
        where = "calibration" if self.on_calibration_data else "validation"
        parts = [f"cosine {self.cosine:.4f}"]
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {100 * self.top1_agreement:.1f}%")
        if self.litert_accuracy is not None:
            parts.append(f"accuracy {100 * self.litert_accuracy:.1f}% "
                         f"(Keras {100 * self.keras_accuracy:.1f}%)")
        return f"vs Keras on {self.samples} {where} samples: " + ", ".join(parts)


def cosine(a, b):
    """Cosine similarity of two arrays, flattened."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms else float(np.array_equal(a, b))


def split_validation_data(validation_data):
    """`(inputs, labels or None)` from `validation_data`: inputs, or a tuple `(inputs, labels)`."""
    if isinstance(validation_data, tuple):
        if len(validation_data) != 2:
            raise ValueError(
                "`validation_data` must be the inputs (an array, or a list of arrays) or a "
                f"tuple (inputs, labels); got a tuple of {len(validation_data)} items."
            )
        inputs, labels = validation_data
        labels = np.asarray(labels).reshape(-1)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(
                f"`validation_data` labels must be integer class indices; got dtype {labels.dtype}."
            )
        return inputs, labels
    return validation_data, None


def _run_fused(path, arrays):
    """Runs a model with fused ops in `keras_attn.edge.Runtime`, batch by batch."""
    from keras_attn.edge import Runtime

    runtime = Runtime(path, threads=1)
    batch = runtime.input_shapes[0][0]
    outputs = []
    for start in range(0, len(arrays[0]) - batch + 1, batch):
        result = runtime([a[start : start + batch] for a in arrays])
        outputs.append(result if isinstance(result, list) else [result])
    return [np.concatenate(parts) for parts in zip(*outputs)]


def measure(model, path, arrays, labels, on_calibration_data, fused):
    """The `Agreement` of the `.tflite` file at `path` with `model` on `arrays` (float inputs,
    one array per model input)."""
    from keras_attn.export.litert import LiteRTModel

    if fused:
        got = _run_fused(path, arrays)
    else:
        got = LiteRTModel(path, num_threads=1)(arrays)
        got = got if isinstance(got, list) else [got]
    count = len(got[0])
    inputs = [a[:count] for a in arrays]
    expected = model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    expected = [np.asarray(e) for e in expected]
    figures = {"cosine": cosine(np.concatenate([g.ravel() for g in got]),
                                np.concatenate([e.ravel() for e in expected]))}
    if len(got) == 1 and got[0].ndim == 2 and got[0].shape[1] > 1:
        predicted, reference = got[0].argmax(axis=1), expected[0].argmax(axis=1)
        figures["top1_agreement"] = float((predicted == reference).mean())
        if labels is not None:
            labels = labels[:count]
            figures["litert_accuracy"] = float((predicted == labels).mean())
            figures["keras_accuracy"] = float((reference == labels).mean())
    return Agreement(samples=count, on_calibration_data=on_calibration_data, **figures)
