"""ResNet-18/34/50/101/152 with CBAM, BAM, SE or any registered attention, as the CBAM/BAM authors
build them (`Jongchan/attention-module`, `MODELS/model_resnet.py`, ImageNet variant).

Layers carry the authors' PyTorch module paths as names (`conv1`, `layer1.0.conv2`,
`layer3.5.cbam`, `bam2`, `fc`), so `keras_attn.convert.load_torch_state_dict` maps their
checkpoints by name, and `model.summary()` reads like their module tree.
"""

import keras

from keras_attn.layers import BAM
from keras_attn.models._init import authors_initializer, init_like_authors
from keras_attn.models._pretrained import check_weights, load_weights
from keras_attn.registry import get_attention

# depth -> (residual block, blocks per stage).
_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}
_STAGE_WIDTHS = (64, 128, 256, 512)
# PyTorch's BatchNorm2d defaults (momentum 0.1 in PyTorch's convention is 0.9 in Keras').
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def resnet(depth, *, attention=None, weights=None, include_top=True, num_classes=1000,
           input_shape=None, data_format=None, pooling=None, classifier_activation="softmax",
           attention_kwargs=None, name=None):
    """Builds an ImageNet ResNet with attention placed as in the CBAM and BAM papers' code.

    Block attention (CBAM, SE and every registered type except BAM) sits in every residual block
    on the residual branch, after its last BatchNormalization and before the addition; BAM sits
    after stages 1, 2 and 3 only. The stem is a 7x7 stride-2 convolution, BatchNormalization,
    ReLU and a 3x3 stride-2 max pool, padded like PyTorch's. Weights are initialised like the
    authors' (Kaiming normal fan-out convolutions, CBAM's spatial-gate BatchNormalization scale
    starting at 0; see `keras_attn.models._init`).

    Args:
        depth: 18, 34, 50, 101 or 152.
        attention: None, a name `keras_attn.get_attention` knows (`"cbam"`, `"bam"`, `"se"`, ...)
            or an attention layer class (built as `cls(data_format=..., **attention_kwargs)`;
            BAM and its subclasses go after stages, every other class in every block).
        weights: None (the authors' random initialisation), `"imagenet"` (downloads the
            published checkpoint of this depth and attention with `keras.utils.get_file` into
            `~/.keras/models`, checks its SHA-1 and loads it; see
            `keras_attn.models.CHECKPOINTS`), or the path of a PyTorch checkpoint in the
            authors' or pytorchcv's naming. With `include_top=False` the checkpoint's
            classifier is left out. Loading a checkpoint needs PyTorch installed.
        include_top: whether to end with global average pooling and the `fc` classifier.
        num_classes: classifier width, when `include_top`.
        input_shape: input shape without the batch axis; defaults to 224x224 RGB in
            `data_format`.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.
        pooling: without the top, None (4D feature map), `"avg"` or `"max"` (global pooling).
        classifier_activation: activation of `fc`; None returns the logits the authors' model
            returns.
        attention_kwargs: extra constructor arguments of the attention layer (the layer's
            defaults are the authors': reduction ratio 16, 7x7 spatial kernel, ...).
        name: model name; defaults to e.g. `"cbam_resnet50"`.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> model = resnet(50, attention="cbam", input_shape=(224, 224, 3))

    Reference:
        Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018;
        Park et al., "BAM: Bottleneck Attention Module", BMVC 2018;
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    if depth not in _DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(_DEPTHS)}, got {depth!r}.")
    data_format = _check_data_format(data_format)
    input_shape = _check_input_shape(input_shape, data_format)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', got {pooling!r}.")
    if include_top and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                        or num_classes < 1):
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
    block_kind, blocks_per_stage = _DEPTHS[depth]
    attention_spec = _AttentionSpec.resolve(attention, attention_kwargs, data_format)
    attention_label = attention_spec.label if attention_spec else None
    check_weights(weights, attention_label, depth, include_top, num_classes, attention_kwargs)

    inputs = keras.Input(input_shape, name="input")
    x = _stem(inputs, data_format)
    block = _bottleneck_block if block_kind == "bottleneck" else _basic_block
    for stage, (width, blocks) in enumerate(zip(_STAGE_WIDTHS, blocks_per_stage), start=1):
        for index in range(blocks):
            stride = 2 if stage > 1 and index == 0 else 1
            x = block(x, width, stride, f"layer{stage}.{index}", data_format,
                      attention_spec if attention_spec and not attention_spec.after_stage
                      else None)
        if attention_spec and attention_spec.after_stage and stage < len(_STAGE_WIDTHS):
            x = attention_spec(x, f"{attention_spec.label}{stage}")

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
        x = keras.layers.Dense(
            num_classes, activation=classifier_activation, name="fc",
            kernel_initializer=authors_initializer("fc.weight", "linear"),
            bias_initializer=authors_initializer("fc.bias", "linear"))(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(data_format=data_format, name="global_maxpool")(x)
    if name is None:
        name = f"{attention_label}_resnet{depth}" if attention_spec else f"resnet{depth}"
    model = keras.Model(inputs, x, name=name)
    load_weights(model, weights, attention_label, depth, include_top)
    return model


def resnet18(**kwargs):
    """ResNet-18 (basic blocks 2-2-2-2); the arguments are those of `resnet`."""
    return resnet(18, **kwargs)


def resnet34(**kwargs):
    """ResNet-34 (basic blocks 3-4-6-3); the arguments are those of `resnet`."""
    return resnet(34, **kwargs)


def resnet50(**kwargs):
    """ResNet-50 (bottleneck blocks 3-4-6-3); the arguments are those of `resnet`."""
    return resnet(50, **kwargs)


def resnet101(**kwargs):
    """ResNet-101 (bottleneck blocks 3-4-23-3); the arguments are those of `resnet`."""
    return resnet(101, **kwargs)


def resnet152(**kwargs):
    """ResNet-152 (bottleneck blocks 3-8-36-3); the arguments are those of `resnet`."""
    return resnet(152, **kwargs)


class _AttentionSpec:
    """An attention layer class, how to build it, and where it goes."""

    def __init__(self, layer_class, label, kwargs, after_stage):
        self.layer_class = layer_class
        self.label = label
        self.kwargs = kwargs
        self.after_stage = after_stage

    @classmethod
    def resolve(cls, attention, attention_kwargs, data_format):
        if attention is None:
            if attention_kwargs:
                raise ValueError("`attention_kwargs` needs an `attention`, got attention=None.")
            return None
        if isinstance(attention, str):
            layer_class, label = get_attention(attention), attention.lower()
        elif isinstance(attention, type) and issubclass(attention, keras.layers.Layer):
            layer_class, label = attention, attention.__name__.lower()
        else:
            raise TypeError("`attention` must be None, an attention name or a Keras layer class, "
                            f"got {attention!r}.")
        if attention_kwargs is not None and not isinstance(attention_kwargs, dict):
            raise TypeError(f"`attention_kwargs` must be a dict, got {attention_kwargs!r}.")
        kwargs = {"data_format": data_format, **(attention_kwargs or {})}
        return cls(layer_class, label, kwargs,
                   after_stage=issubclass(layer_class, BAM))

    def __call__(self, x, name):
        layer = self.layer_class(name=name, **self.kwargs)
        y = layer(x)
        init_like_authors(layer, name)
        return y


def _stem(x, data_format):
    # PyTorch pads 3 on every side of the 7x7/2 convolution and 1 around the 3x3/2 max pool;
    # Keras' "same" pads (0, 1) at stride 2 on even sizes, so the padding is explicit. Zero
    # padding before the max pool equals PyTorch's -inf padding because it follows a ReLU.
    x = keras.layers.ZeroPadding2D(3, data_format=data_format, name="conv1_pad")(x)
    x = _conv(x, 64, 7, 2, "conv1", data_format, padding="valid")
    x = _batchnorm(x, "bn1", data_format)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.ZeroPadding2D(1, data_format=data_format, name="maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, data_format=data_format, name="maxpool")(x)


def _basic_block(x, planes, stride, name, data_format, attention):
    shortcut = x
    out = _conv3x3(x, planes, stride, f"{name}.conv1", data_format)
    out = _batchnorm(out, f"{name}.bn1", data_format)
    out = keras.layers.ReLU(name=f"{name}.relu1")(out)
    out = _conv3x3(out, planes, 1, f"{name}.conv2", data_format)
    out = _batchnorm(out, f"{name}.bn2", data_format)
    return _merge(out, shortcut, planes, stride, name, data_format, attention)


def _bottleneck_block(x, planes, stride, name, data_format, attention):
    shortcut = x
    out = _conv(x, planes, 1, 1, f"{name}.conv1", data_format)
    out = _batchnorm(out, f"{name}.bn1", data_format)
    out = keras.layers.ReLU(name=f"{name}.relu1")(out)
    out = _conv3x3(out, planes, stride, f"{name}.conv2", data_format)
    out = _batchnorm(out, f"{name}.bn2", data_format)
    out = keras.layers.ReLU(name=f"{name}.relu2")(out)
    out = _conv(out, planes * 4, 1, 1, f"{name}.conv3", data_format)
    out = _batchnorm(out, f"{name}.bn3", data_format)
    return _merge(out, shortcut, planes * 4, stride, name, data_format, attention)


def _merge(out, shortcut, channels, stride, name, data_format, attention):
    """Block attention on the residual branch, projection shortcut if needed, add, ReLU."""
    if stride != 1 or shortcut.shape[_channel_axis(data_format)] != channels:
        shortcut = _conv(shortcut, channels, 1, stride, f"{name}.downsample.0", data_format)
        shortcut = _batchnorm(shortcut, f"{name}.downsample.1", data_format)
    if attention is not None:
        out = attention(out, f"{name}.{attention.label}")
    out = keras.layers.Add(name=f"{name}.add")([out, shortcut])
    return keras.layers.ReLU(name=f"{name}.relu")(out)


def _conv3x3(x, filters, stride, name, data_format):
    if stride == 1:
        return _conv(x, filters, 3, 1, name, data_format, padding="same")
    # PyTorch's padding=1 at stride 2 is symmetric, unlike Keras' "same".
    x = keras.layers.ZeroPadding2D(1, data_format=data_format, name=f"{name}_pad")(x)
    return _conv(x, filters, 3, stride, name, data_format, padding="valid")


def _conv(x, filters, kernel_size, stride, name, data_format, padding="valid"):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding=padding, use_bias=False,
        data_format=data_format, name=name,
        kernel_initializer=authors_initializer(f"{name}.weight", "conv"))(x)


def _batchnorm(x, name, data_format):
    return keras.layers.BatchNormalization(
        axis=_channel_axis(data_format), momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name,
        gamma_initializer=authors_initializer(f"{name}.weight", "batchnorm"),
        beta_initializer=authors_initializer(f"{name}.bias", "batchnorm"))(x)


def _channel_axis(data_format):
    return 1 if data_format == "channels_first" else -1


def _check_data_format(data_format):
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError("`data_format` must be 'channels_last' or 'channels_first', "
                         f"got {data_format!r}.")
    return data_format


def _check_input_shape(input_shape, data_format):
    if input_shape is None:
        return (3, 224, 224) if data_format == "channels_first" else (224, 224, 3)
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    valid = shape is not None and len(shape) == 3 and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)
    channels = shape[_channel_axis(data_format)] if valid else None
    if not valid or channels is None:
        raise ValueError("`input_shape` must be 3 positive ints (height, width and channels, in "
                         f"{data_format} order; height and width may be None), "
                         f"got {input_shape!r}.")
    return shape
