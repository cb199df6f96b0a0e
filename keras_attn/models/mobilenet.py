"""MobileNet (v1) with CBAM, SE or any registered attention, laid out as in the CBAM paper's
MobileNet experiments: `keras.applications.MobileNet` with an attention layer after each
convolution of its depthwise-separable blocks."""

import keras

from keras_attn.models.insert import _attention_class, _kind_name, insert_attention

# Where the attention goes: Keras' MobileNet names the activations of its depthwise-separable
# block i (1 to 13) "conv_dw_{i}_relu" (depthwise) and "conv_pw_{i}_relu" (pointwise); the
# stem's is "conv1_relu".
_SEPARABLE_ACTIVATIONS = frozenset(
    f"conv_{kind}_{block}_relu" for block in range(1, 14) for kind in ("dw", "pw"))


def mobilenet(alpha=1.0, *, attention=None, depth_multiplier=1, dropout=1e-3, weights=None,
              include_top=True, num_classes=1000, input_shape=None, pooling=None,
              classifier_activation="softmax", attention_kwargs=None, name=None):
    """Builds MobileNet with attention placed as in the CBAM paper's MobileNet table.

    The network is `keras.applications.MobileNet` (its layers, names and ImageNet weights);
    with `attention`, one attention layer follows each of the 26 convolutions of its 13
    depthwise-separable blocks, after the convolution's BatchNormalization and ReLU: 13 after
    the depthwise 3x3 convolutions and 13 after the pointwise 1x1 ones (none after the stem).
    We found no description of the placement in the paper, and the authors' code has no
    MobileNet; this is the placement that reproduces the paper's parameter counts (4.23M
    without attention and 5.07M with CBAM or SE at width 1, 2.30M and 2.71M at width 0.7),
    where attention after the pointwise convolutions alone would add half as much (see
    docs/models.md).

    Args:
        alpha: the width multiplier (the CBAM paper uses 1 and 0.7): every layer has
            `int(alpha * width)` channels, as in `keras.applications.MobileNet`.
        attention: None, a name `keras_attn.get_attention` knows (`"cbam"`, `"se"`, `"eca"`,
            ...) or an attention layer class.
        depth_multiplier: channels per input channel of the depthwise convolutions.
        dropout: dropout rate before the classifier.
        weights: None (random initialisation) or `"imagenet"`: Keras' ImageNet weights of
            MobileNet (downloaded by Keras; alpha 0.25, 0.5, 0.75 or 1.0, square inputs of 128,
            160, 192 or 224 pixels, 1000 classes with the top). The attention layers always
            start from their default initialisation: no CBAM-MobileNet checkpoint is
            published.
        include_top: whether to end with global average pooling and the classifier.
        num_classes: classifier width, when `include_top`.
        input_shape: input shape without the batch axis, in `keras.config.image_data_format()`
            order; defaults to 224x224 RGB.
        pooling: without the top, None (4D feature map), `"avg"` or `"max"` (global pooling).
        classifier_activation: activation of the classifier; None returns logits.
        attention_kwargs: extra constructor arguments of every attention layer (the layer's
            defaults are the paper's: reduction ratio 16, 7x7 spatial kernel, ...).
        name: model name; defaults to Keras' (`"mobilenet_0.70_224"`), prefixed with the
            attention (`"cbam_mobilenet_0.70_224"`).

    Returns:
        A functional `keras.Model`. The attention layers are named after the activation they
        follow: `"conv_dw_1_relu_cbam"`, `"conv_pw_1_relu_cbam"`, ...

    Raises:
        ValueError: for a bad `alpha`, `weights` or `attention_kwargs` value, an unknown
            attention name, and whatever `keras.applications.MobileNet` refuses (input shape,
            pooling, ImageNet weights for an alpha or size Keras does not publish).
        TypeError: for an `attention` or `attention_kwargs` of the wrong type.

    Example:

    >>> model = mobilenet(0.7, attention="cbam")
    >>> sum(isinstance(layer, keras_attn.CBAM) for layer in model.layers)
    26

    Reference:
        Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018;
        Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
        Applications", arXiv:1704.04861, 2017.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"`alpha` must be a positive number, got {alpha!r}.")
    if weights not in (None, "imagenet"):
        raise ValueError(
            f"`weights` must be None or 'imagenet', got {weights!r}. (To load weights saved "
            "from a model of this function, call `model.load_weights(path)` on its result.)"
        )
    if attention is None and attention_kwargs:
        raise ValueError("`attention_kwargs` needs an `attention`, got attention=None.")
    if attention_kwargs is not None and not isinstance(attention_kwargs, dict):
        raise TypeError(f"`attention_kwargs` must be a dict, got {attention_kwargs!r}.")
    # A bad `attention` is refused before the network is built.
    label = None if attention is None else _kind_name(attention, _attention_class(attention))
    base = keras.applications.MobileNet(
        input_shape=input_shape, alpha=alpha, depth_multiplier=depth_multiplier,
        dropout=dropout, include_top=include_top, weights=weights, pooling=pooling,
        classes=num_classes, classifier_activation=classifier_activation)
    if attention is None:
        return base if name is None else keras.Model(base.input, base.output, name=name)
    model = insert_attention(base, attention,
                             where=lambda layer: layer.name in _SEPARABLE_ACTIVATIONS,
                             **(attention_kwargs or {}))
    return keras.Model(model.input, model.output, name=name or f"{label}_{base.name}")

