"""The one place keras_attn reads a private Keras attribute: the layers a plain layer holds.

`keras.Model.layers` lists a model's own layers, but a plain `keras.Layer` that holds layers
as attributes (CBAM's two gates, a user's residual block carrying a CBAM) has no public
listing of them in Keras 3: Keras records them, as the attribute is set, in the layer's private
`_layers` list (`tf.Module.submodules` would cover it on the TensorFlow backend only).
tests/test_keras_internals.py fails if a Keras release stops filling it.

Keras is imported when first needed: `keras_attn.edge` and `keras_attn.kernels` import the
export helpers' modules and must run on a device without Keras or TensorFlow.
"""


def sublayers(layer):
    """The layers `layer` holds directly, each once, in the order Keras tracks them."""
    import keras

    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(layer._layers)


def nested_layers(layer):
    """Every layer inside `layer` at any depth (not `layer` itself), each once, every layer
    before the layers it holds."""
    found, seen = [], set()
    pending = sublayers(layer)[::-1]
    while pending:
        child = pending.pop()
        if id(child) in seen:
            continue
        seen.add(id(child))
        found.append(child)
        pending.extend(sublayers(child)[::-1])
    return found
