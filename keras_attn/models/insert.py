"""`insert_attention`: attention layers added to an existing functional model, weights kept."""

import collections

import keras

from keras_attn.layers._base import AttentionLayer
from keras_attn.registry import get_attention


def insert_attention(model, attention="cbam", *, where=None, **attention_kwargs):
    """Returns a new functional model with attention layers inserted, the original weights kept.

    By default one attention layer goes on the residual branch of every residual merge (a
    `keras.layers.Add` of two 4-D maps of the same shape), just before the merge, as in the CBAM,
    BAM and SE papers: `Add([shortcut, attention(residual)])`. The residual branch is the deeper
    of the two inputs (counted in layers from the model's inputs), the shortcut the shallower: the
    identity or projection path. This finds every block of `keras.applications` ResNets,
    ResNetV2s, MobileNetV2 and EfficientNets, whichever order their `Add` takes its inputs in.

    The new model is a clone: every original layer is rebuilt with a copy of its weights, so the
    original model is left as it was, and training the new one does not change it. The attention
    layers start from their default initialisation.

    Args:
        model: a functional `keras.Model` (a Sequential or subclassed model is refused).
        attention: a name `keras_attn.get_attention` knows (`"cbam"`, `"bam"`, `"se"`, `"eca"`,
            `"sk"`) or an attention layer class. Default `"cbam"`.
        where: None (default: the residual branches) or `callable(layer) -> bool`, given every
            layer of `model`: an attention layer goes after each layer it accepts instead (for
            example after given convolutions of a plain CNN such as VGG16, which has no merges).
            The accepted layers must output one 4-D map.
        **attention_kwargs: arguments of every attention layer (`reduction_ratio=8`,
            `data_format=...`, ...). The dtype policy defaults to that of the layer it follows.

    Returns:
        A new functional `keras.Model`, named like the original. The attention layers are named
        `"{layer}_{kind}"` after the merge (or the `where` layer) they serve, for example
        `"conv2_block1_add_cbam"`; a layer called several times gets one per call, the second
        named `"{layer}_{kind}_2"`, and so on.

    Raises:
        TypeError: for a model that is not functional, or `attention` of the wrong type.
        ValueError: for an unknown attention name, when nothing matches (no residual merge, or
            `where` accepts no layer), or when `where` accepts a layer without a 4-D map output.

    Example:

    >>> base = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    >>> model = keras_attn.models.insert_attention(base, "cbam")
    >>> sum(isinstance(layer, keras_attn.CBAM) for layer in model.layers)
    16
    """
    _check_functional(model)
    cls = _attention_class(attention)
    kind = _kind_name(attention, cls)
    if where is not None and not callable(where):
        raise TypeError(f"`where` must be None or a callable(layer) -> bool; got {where!r}.")

    # `clone_model` calls `call` once per call node of the graph, in a topological order, with
    # the cloned layer and the new tensors: the tensors' depths (layers on the longest path
    # from an input) are known by the time a merge needs them.
    depths = {}  # id(new tensor) -> (tensor, depth); the tensor kept so that its id stays its own
    calls = collections.Counter()  # layer name -> attention layers placed for it so far
    inserted = []

    def depth(tensor):
        return depths.get(id(tensor), (None, 0))[1]

    def attend(layer, x):
        # A shared layer (called more than once) gets one attention layer per call.
        calls[layer.name] += 1
        suffix = "" if calls[layer.name] == 1 else f"_{calls[layer.name]}"
        kwargs = {"dtype": layer.dtype_policy, **attention_kwargs}
        inserted.append(cls(name=f"{layer.name}_{kind}{suffix}", **kwargs))
        return inserted[-1](x)

    def call(layer, *args, **kwargs):
        inputs = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        level = 1 + max((depth(t) for t in inputs), default=-1)
        if where is None:
            if _is_residual_merge(layer, args):
                pair = list(args[0])
                # The deeper input is the residual branch; on a tie, the second (Keras' order).
                residual = 0 if depth(pair[0]) > depth(pair[1]) else 1
                pair[residual] = attend(layer, pair[residual])
                args = (pair, *args[1:])
            outputs = layer(*args, **kwargs)
        else:
            outputs = layer(*args, **kwargs)
            # `where` sees the layer of `model`, not its clone.
            if where(model.get_layer(layer.name)):
                outputs = attend(layer, _one_map(layer, outputs))
        for tensor in keras.tree.flatten(outputs):
            depths[id(tensor)] = (tensor, level)
        return outputs

    # New inputs named like the original ones (a clone's would be named after its tensors).
    input_names = {
        id(layer.output): layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.InputLayer)
    }
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=input_names[id(t)]),
        model.input,
    )
    new_model = keras.models.clone_model(model, input_tensors=inputs, call_function=call)
    if not inserted:
        if where is None:
            raise ValueError(
                f"{model.name} has no residual merge (a keras.layers.Add of two 4-D maps of the "
                "same shape); pass `where=` to choose the layers to follow with attention."
            )
        raise ValueError(f"`where` accepted no layer of {model.name}.")
    for layer in model.layers:
        if layer.weights:
            new_model.get_layer(layer.name).set_weights(layer.get_weights())
    return new_model


def _check_functional(model):
    if isinstance(model, keras.Sequential):
        raise TypeError(
            "insert_attention needs a functional model; got a Sequential model. Rebuild it with "
            "the functional API (`keras.Model(inputs, outputs)`), or build the attention into "
            "the Sequential model directly."
        )
    # The one place this module leans on Keras' internals: `keras.Model(inputs, outputs)` makes
    # an instance of Keras' `Functional` class, which Keras does not export and has no public
    # predicate for, so the class is recognised by name. `keras.models.clone_model` makes the
    # same distinction (it rewires only functional models). Should Keras rename the class,
    # tests/test_insert_attention.py fails on every functional model.
    is_functional = isinstance(model, keras.Model) and any(
        c.__name__ == "Functional" for c in type(model).__mro__
    )
    if not is_functional:
        raise TypeError(
            "insert_attention needs a functional keras.Model (built as `keras.Model(inputs, "
            f"outputs)`); got {type(model).__name__}, which has no layer graph to rewrite."
        )


def _attention_class(attention):
    if isinstance(attention, str):
        return get_attention(attention)
    if isinstance(attention, type) and issubclass(attention, AttentionLayer):
        return attention
    raise TypeError(
        "`attention` must be an attention name (such as 'cbam') or an attention layer class; "
        f"got {attention!r}."
    )


def _kind_name(attention, cls):
    return attention.lower() if isinstance(attention, str) else cls.__name__.lower()


def _is_residual_merge(layer, args):
    """An `Add` of two 4-D maps of the same shape."""
    if not isinstance(layer, keras.layers.Add) or len(args) != 1:
        return False
    pair = args[0]
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        return False
    shapes = [tuple(t.shape) for t in pair]
    return len(shapes[0]) == 4 and shapes[0][1:] == shapes[1][1:]


def _one_map(layer, outputs):
    flat = keras.tree.flatten(outputs)
    if len(flat) != 1 or len(flat[0].shape) != 4:
        shapes = [tuple(t.shape) for t in flat]
        raise ValueError(
            f"`where` accepted layer {layer.name!r}, whose output is not one 4-D map "
            f"(got {shapes}); attention goes after layers that output one feature map."
        )
    return flat[0]
