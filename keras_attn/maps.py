"""`attention_maps`: every attention layer's gates in a model, for a batch, by layer name;
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
