"""`to_saved_model`: a TensorFlow SavedModel for TF Serving, with a dynamic batch dimension."""

import keras

from keras_attn.export._files import atomic_output, check_target


def check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            "`model` is not built: call it once on data or give it a keras.Input first."
        )


def to_saved_model(model, path, input_signature=None):
    """Exports `model` as a SavedModel whose serving signature takes any batch size.

    Uses Keras' own exporter (`model.export(format="tf_saved_model")`): the inference function is
    traced with `training=False`, so BatchNormalization uses its moving statistics. The result
    loads with `tf.saved_model.load` (no Keras and no keras-attn needed) and serves through
    `loaded.serve(x)` or `loaded.signatures["serving_default"]`, e.g. in TF Serving.

    Args:
        model: a built `keras.Model`.
        path: folder to create (missing parent folders are created too). An existing folder
            there is replaced only once the new export is complete.
        input_signature: optional list of `tf.TensorSpec` (or `keras.InputSpec`), one per model
            input; by default the model's inputs with a `None` batch dimension.

    Returns:
        The absolute path of the SavedModel folder.

    Example:

    >>> to_saved_model(model, "exported/cbam_cnn")  # doctest: +SKIP
    >>> loaded = tf.saved_model.load("exported/cbam_cnn")  # doctest: +SKIP
    >>> loaded.serve(images)  # doctest: +SKIP
    """
    check_model(model)
    path = check_target(path, kind="folder")
    with atomic_output(path) as tmp:
        model.export(tmp, format="tf_saved_model", input_signature=input_signature, verbose=False)
    return path
