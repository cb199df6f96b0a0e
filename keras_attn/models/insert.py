"""`insert_attention`: attention layers added to an existing functional model, weights kept."""

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
        `"conv2_block1_add_cbam"`.

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
    if where is None:
        targets = _residual_merges(model)
        if not targets:
            raise ValueError(
                f"{model.name} has no residual merge (a keras.layers.Add of two 4-D maps of the "
                "same shape); pass `where=` to choose the layers to follow with attention."
            )
    else:
        if not callable(where):
            raise TypeError(f"`where` must be None or a callable(layer) -> bool; got {where!r}.")
        targets = _chosen_layers(model, where)

    def make(layer):
        kwargs = {"dtype": layer.dtype_policy, **attention_kwargs}
        return cls(name=f"{layer.name}_{kind}", **kwargs)

    def call(layer, *args, **kwargs):
        if layer.name not in targets:
            return layer(*args, **kwargs)
        if where is not None:
            return make(layer)(layer(*args, **kwargs))
        residual = targets[layer.name]
        inputs = list(args[0])
        inputs[residual] = make(layer)(inputs[residual])
        return layer(inputs, *args[1:], **kwargs)

    # New inputs named like the original ones (a clone's would be renamed otherwise).
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history[0].name),
        model.input,
    )
    new_model = keras.models.clone_model(model, input_tensors=inputs, call_function=call)
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


def _graph_nodes(model):
    """The call nodes of `model`'s graph, in a topological order (inputs first).

    Keras 3 records a functional model's nodes by their depth from the outputs; from the deepest
    to depth 0 is an order in which every node comes after the nodes that feed it.
    """
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _residual_merges(model):
    """Name -> index of the residual input, for every Add of two same-shaped 4-D maps."""
    depths = {}  # id(tensor) -> layers on the longest path from an input
    merges = {}
    for node in _graph_nodes(model):
        inputs = node.input_tensors
        depth = 1 + max((depths[id(t)] for t in inputs), default=-1)
        for tensor in node.output_tensors:
            depths[id(tensor)] = depth
        if not isinstance(node.operation, keras.layers.Add) or len(inputs) != 2:
            continue
        if len(inputs[0].shape) != 4 or tuple(inputs[0].shape[1:]) != tuple(inputs[1].shape[1:]):
            continue
        # The deeper input is the residual branch; on a tie, the second (Keras' usual order).
        merges[node.operation.name] = 0 if depths[id(inputs[0])] > depths[id(inputs[1])] else 1
    return merges


def _chosen_layers(model, where):
    chosen = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or not where(layer):
            continue
        outputs = keras.tree.flatten(layer.output)
        if len(outputs) != 1 or len(outputs[0].shape) != 4:
            shapes = [tuple(t.shape) for t in outputs]
            raise ValueError(
                f"`where` accepted layer {layer.name!r}, whose output is not one 4-D map "
                f"(got {shapes}); attention goes after layers that output one feature map."
            )
        chosen[layer.name] = None
    if not chosen:
        raise ValueError(f"`where` accepted no layer of {model.name}.")
    return chosen
