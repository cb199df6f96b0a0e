"""`attention_maps`: every attention layer's gates in a model, for a batch, by layer name;
`grad_cam`: Grad-CAM heat maps at a layer of a model (TensorFlow and JAX backends);
`overlay_attention`: a spatial map drawn over its image (matplotlib)."""

import keras
import numpy as np

from keras_attn.layers._base import AttentionLayer


def attention_maps(model, x, batch_size=None):
    """Returns the attention maps of every attention layer of `model` for the batch `x`.

    Runs the model in inference mode up to each attention layer (CBAM, BAM, ChannelAttention,
    SpatialAttention, SqueezeExcite, ECA, SelectiveKernel and BAM's gates) and collects what the
    layer returns with `return_attention_scores=True`, without rebuilding the model by hand.

    Args:
        model: a functional or Sequential `keras.Model` whose attention layers each appear once
            in its own graph (not inside a nested model).
        x: the model's input batch (what `model.predict` takes).
        batch_size: passed to `predict`; None uses its default.

    Returns:
        A dict from layer name to that layer's maps as NumPy arrays: one array for a single gate
        (`SqueezeExcite`: `(N, 1, 1, C)`), a dict for blocks with several (`CBAM`:
        `{"channel": (N, 1, 1, C), "spatial": (N, H, W, 1)}`; `BAM`: `"channel"`, `"spatial"`,
        `"attention"`), in the layers' order in the model.

    Raises:
        ValueError: when `model` has no attention layer, or an attention layer cannot be reached
            from the model's inputs (used twice, or inside a nested model).

    Example:

    >>> inputs = keras.Input((16, 16, 8))
    >>> model = keras.Model(inputs, keras_attn.CBAM(reduction_ratio=2, name="cbam")(inputs))
    >>> maps = keras_attn.attention_maps(model, np.ones((2, 16, 16, 8), "float32"))
    >>> maps["cbam"]["spatial"].shape
    (2, 16, 16, 1)
    """
    layers = [layer for layer in model.layers if isinstance(layer, AttentionLayer)]
    if not layers:
        nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        hint = f" (nested models: {nested}; pass the one that holds them)" if nested else ""
        raise ValueError(f"{model.name} has no attention layer of keras_attn{hint}.")
    layer_inputs = []
    for layer in layers:
        try:
            layer_inputs.append(layer.input)
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"attention_maps needs each attention layer called once in {model.name}'s graph; "
                f"{layer.name}: {error}"
            ) from None
    # The model up to every attention layer's input, then each layer on its own input: a second
    # symbolic call of a layer already in the graph does not connect in Keras 3.
    probe = keras.Model(model.inputs, layer_inputs)
    features = probe.predict(x, batch_size=batch_size, verbose=0)
    if len(layers) == 1:
        features = [features]
    maps = {}
    for layer, feature in zip(layers, features):
        _, scores = layer(feature, training=False, return_attention_scores=True)
        maps[layer.name] = keras.tree.map_structure(keras.ops.convert_to_numpy, scores)
    return maps


def grad_cam(model, x, layer_name=None, class_index=None):
    """Grad-CAM heat maps of `model` for the batch `x`, at the output of one of its layers.

    Each map is the ReLU of the layer's feature maps weighted by the spatial mean of the class
    score's gradient with respect to them, scaled to [0, 1] per image (a map with no positive
    value stays 0). The model runs in inference mode; the gradient is taken with the active
    Keras backend: TensorFlow (`tf.GradientTape`) or JAX (`jax.vjp` over the model's stateless
    call).

    Args:
        model: a functional or Sequential `keras.Model` with one input and one output of shape
            `(N, classes)` (scores or probabilities).
        x: the model's input batch, an array of the input's shape.
        layer_name: the name of a layer called once in `model`'s own graph (not inside a nested
            model) whose output is a feature map with a batch axis, one to three spatial axes and
            a channel axis, in the layer's `data_format` (channels_last where it has none). None
            takes the model's last keras_attn attention layer.
        class_index: the class to explain, an int in `[0, classes)`; None explains each image's
            top class.

    Returns:
        A float32 NumPy array `(N, *spatial)`: for a 2-D map `(N, H, W)`, at the layer's
        resolution (upsample it to overlay it on the image).

    Raises:
        TypeError: when `model` is not a `keras.Model`, or `layer_name` or `class_index` has the
            wrong type.
        ValueError: when the layer is missing, not called once in the model's graph or has no
            spatial axis, the model has not one input and one 2-D output, or `class_index` is out
            of range.
        NotImplementedError: on a backend other than TensorFlow and JAX.

    Example:

    >>> inputs = keras.Input((16, 16, 3))
    >>> h = keras_attn.CBAM(reduction_ratio=2, name="cbam")(keras.layers.Conv2D(8, 3)(inputs))
    >>> outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h))
    >>> model = keras.Model(inputs, outputs)
    >>> keras_attn.maps.grad_cam(model, np.ones((2, 16, 16, 3), "float32")).shape
    (2, 14, 14)

    Reference:
        Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
        Localization", ICCV 2017.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"`model` must have one input and one output; {model.name} has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    if len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"`model` must output class scores of shape (N, classes); {model.name} outputs "
            f"shape {tuple(model.outputs[0].shape)}."
        )
    classes = model.outputs[0].shape[-1]
    if class_index is not None:
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
            raise TypeError(
                f"`class_index` must be an int or None; got {type(class_index).__name__}."
            )
        if classes is not None and not 0 <= class_index < classes:
            raise ValueError(
                f"`class_index` must be in [0, {classes}) for {model.name}; got {class_index}."
            )
    layer = _grad_cam_layer(model, layer_name)
    try:
        features_symbol = layer.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"grad_cam needs layer {layer.name} called once in {model.name}'s graph: {error}"
        ) from None
    rank = len(features_symbol.shape)
    if rank not in (3, 4, 5):
        raise ValueError(
            f"The output of layer {layer.name} must be a feature map (N, *spatial, channels) of "
            f"rank 3, 4 or 5; got shape {tuple(features_symbol.shape)}."
        )
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    x = keras.ops.convert_to_tensor(x, dtype=model.inputs[0].dtype)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        features, gradients = _grad_cam_gradients_tensorflow(model, features_symbol, x, class_index)
    elif backend == "jax":
        features, gradients = _grad_cam_gradients_jax(model, features_symbol, x, class_index)
    else:
        raise NotImplementedError(
            f"grad_cam takes the gradient with TensorFlow or JAX; the Keras backend is {backend!r}."
        )
    features = np.asarray(features, np.float32)
    gradients = np.asarray(gradients, np.float32)
    if channels_first:
        features, gradients = np.moveaxis(features, 1, -1), np.moveaxis(gradients, 1, -1)
    spatial = tuple(range(1, rank - 1))
    weights = gradients.mean(axis=spatial, keepdims=True)
    cam = np.maximum((weights * features).sum(axis=-1), 0.0)
    peak = cam.max(axis=spatial, keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def _grad_cam_layer(model, layer_name):
    """The layer `grad_cam` explains: `layer_name`'s, or the last attention layer's for None."""
    if layer_name is None:
        layers = [layer for layer in model.layers if isinstance(layer, AttentionLayer)]
        if not layers:
            raise ValueError(
                f"{model.name} has no attention layer of keras_attn; pass `layer_name`, the "
                "name of the layer whose feature maps to explain."
            )
        return layers[-1]
    if not isinstance(layer_name, str):
        raise TypeError(f"`layer_name` must be a str or None; got {type(layer_name).__name__}.")
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(
            f"`layer_name` must name a layer of {model.name}; got {layer_name!r} (its layers: "
            f"{names})."
        )
    return model.get_layer(layer_name)


def _one_hot_classes(predictions, class_index):
    """(N, classes) one-hot of each image's class: `class_index`, or its top score for None."""
    if class_index is None:
        class_index = keras.ops.argmax(predictions, axis=-1)
    else:
        class_index = keras.ops.full(keras.ops.shape(predictions)[:1], class_index, "int32")
    return keras.ops.one_hot(class_index, keras.ops.shape(predictions)[-1], dtype=predictions.dtype)


def _grad_cam_gradients_tensorflow(model, features_symbol, x, class_index):
    """The layer's features and each image's class-score gradient at them, by `tf.GradientTape`."""
    import tensorflow as tf

    probe = keras.Model(model.inputs, [features_symbol, model.outputs[0]])
    with tf.GradientTape() as tape:
        features, predictions = probe(x, training=False)
    # A one-hot output gradient: each image's score depends on its own features only.
    return features, tape.gradient(
        predictions, features, output_gradients=_one_hot_classes(predictions, class_index)
    )


def _grad_cam_gradients_jax(model, features_symbol, x, class_index):
    """The layer's features and each image's class-score gradient at them, by `jax.vjp`.

    The model is split at the layer: `body` computes the features, `head` the predictions from
    the features and the model's input (for the paths that go around the layer, such as a
    residual shortcut), so that the head is a function of the features to differentiate.
    """
    import jax

    body = keras.Model(model.inputs, features_symbol)
    head = keras.Model([*model.inputs, features_symbol], model.outputs[0])
    features = body(x, training=False)

    def predictions_of(features):
        predictions, _ = head.stateless_call(
            head.trainable_variables, head.non_trainable_variables, [x, features], training=False
        )
        return predictions

    predictions, pullback = jax.vjp(predictions_of, features)
    (gradients,) = pullback(_one_hot_classes(predictions, class_index))
    return features, gradients


def overlay_attention(image, attention, ax=None, alpha=0.5, cmap="jet"):
    """Draws `attention` (a spatial map) over `image` on a matplotlib axes, stretched to its size.

    Args:
        image: `(H, W)`, `(H, W, 1)` or `(H, W, 3)` array (floats in [0, 1] or uint8), as
            `imshow` takes it.
        attention: a spatial map of any size, `(h, w)` or `(h, w, 1)` (for example
            `attention_maps(model, x)["cbam"]["spatial"][i]`); it covers the whole image, each
            value a block of pixels. Shown on a fixed [0, 1] scale, the range of a gate.
        ax: the matplotlib axes to draw on; None makes a new figure.
        alpha: opacity of the map. Default 0.5.
        cmap: colour map of the attention. Default `"jet"`.

    Returns:
        The axes.

    Raises:
        ImportError: without matplotlib (`pip install keras-attn[plot]`).
        ValueError: for a map or an image of the wrong rank.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "overlay_attention needs matplotlib: pip install matplotlib (or keras-attn[plot])."
        ) from None
    image, attention = np.asarray(image), np.asarray(attention, dtype=np.float32)
    if attention.ndim == 3 and attention.shape[-1] == 1:
        attention = attention[..., 0]
    if attention.ndim != 2:
        raise ValueError(
            f"`attention` must be a spatial map (h, w) or (h, w, 1); got shape {attention.shape}."
        )
    if image.ndim not in (2, 3):
        raise ValueError(f"`image` must be (H, W) or (H, W, channels); got shape {image.shape}.")
    if ax is None:
        _, ax = plt.subplots()
    height, width = image.shape[:2]
    ax.imshow(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
    ax.imshow(
        attention,
        cmap=cmap,
        alpha=alpha,
        vmin=0.0,
        vmax=1.0,
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),  # the image's own pixel extent
        interpolation="nearest",
    )
    ax.set_axis_off()
    return ax
