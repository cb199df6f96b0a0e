"""The CBAM/BAM authors' weight initialisation, decided from the PyTorch key name as they do.

`MODELS/model_resnet.py` initialises `fc.weight` with Kaiming normal (fan-in), then walks its
state-dict keys: a `weight` whose key contains "conv" gets Kaiming normal (fan-out), one whose key
contains "bn" gets 1 (0 inside CBAM's "SpatialGate"), every `bias` gets 0, and anything else keeps
PyTorch's default (Kaiming uniform with a=sqrt(5) for Linear and Conv2d weights, 1 for BatchNorm).
The shortcut convolutions (`layerX.0.downsample.0`) contain neither "conv" nor "bn", so, like
theirs, they keep PyTorch's default.
"""

import keras

from keras_attn.convert._names import torch_names


def authors_initializer(key, kind):
    """The Keras initializer the authors' code gives the PyTorch parameter `key`.

    Args:
        key: the authors' state-dict key, e.g. `"layer1.0.conv1.weight"`.
        kind: the kind of layer owning it: "conv", "linear" or "batchnorm".
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "bias":
        return keras.initializers.Zeros()
    if leaf != "weight":
        raise ValueError(f"`key` must name a weight or a bias, got {key!r}.")
    if "conv" in key:
        return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
    if "bn" in key:
        return keras.initializers.Zeros() if "SpatialGate" in key else keras.initializers.Ones()
    if key == "fc.weight":
        return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
    if kind == "batchnorm":
        return keras.initializers.Ones()
    # PyTorch's default: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def init_like_authors(layer, prefix):
    """Re-initialises the trainable weights of a built attention `layer` named `prefix`.

    Layers without PyTorch names (an attention type the authors do not have) keep their own
    initialisation.
    """
    names = torch_names(layer, prefix)
    for parameter in names.parameters:
        if parameter.variable.trainable:
            initializer = authors_initializer(parameter.key, parameter.kind)
            parameter.variable.assign(
                initializer(parameter.variable.shape, parameter.variable.dtype))
