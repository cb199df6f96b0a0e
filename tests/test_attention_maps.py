"""keras_attn.attention_maps: every attention layer's gates for a batch, by layer name."""

import keras
import numpy as np
import pytest

import keras_attn


def _model():
    inputs = keras.Input((6, 7, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras_attn.CBAM(reduction_ratio=2, kernel_size=3, name="cbam")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = keras_attn.SqueezeExcite(reduction_ratio=2, name="se")(x)
    x = keras_attn.BAM(reduction_ratio=2, dilation_rate=2, name="bam")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_maps_of_every_layer_match_the_layers_own_scores():
    model = _model()
    x = np.random.default_rng(0).standard_normal((3, 6, 7, 3)).astype("float32")
    maps = keras_attn.attention_maps(model, x)
    assert list(maps) == ["cbam", "se", "bam"]
    assert sorted(maps["cbam"]) == ["channel", "spatial"]
    assert maps["cbam"]["spatial"].shape == (3, 6, 7, 1)
    assert maps["se"].shape == (3, 1, 1, 8)
    assert sorted(maps["bam"]) == ["attention", "channel", "spatial"]
    for name in maps:
        layer = model.get_layer(name)
        layer_input = keras.Model(model.inputs, layer.input).predict(x, verbose=0)
        _, expected = layer(layer_input, training=False, return_attention_scores=True)
        keras.tree.map_structure(
            lambda got, want: np.testing.assert_allclose(got, np.asarray(want), atol=1e-5),
            maps[name],
            expected,
        )
    # The model itself is unchanged: same outputs, same single output.
    assert len(model.outputs) == 1
    assert model.predict(x, verbose=0).shape == (3, 2)


def test_sequential_model():
    model = keras.Sequential(
        [keras.Input((5, 5, 4)), keras_attn.SpatialAttention(kernel_size=3, name="spatial")]
    )
    maps = keras_attn.attention_maps(model, np.ones((2, 5, 5, 4), "float32"))
    assert list(maps) == ["spatial"] and maps["spatial"].shape == (2, 5, 5, 1)


def test_a_model_without_attention_is_an_error():
    inputs = keras.Input((5, 5, 4))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs), name="plain")
    with pytest.raises(ValueError, match=r"plain has no attention layer of keras_attn"):
        keras_attn.attention_maps(model, np.ones((1, 5, 5, 4), "float32"))


def test_overlay_attention_stretches_the_map_over_the_image():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_attn.maps import overlay_attention

    image = np.random.default_rng(0).uniform(0, 1, (12, 16, 3))
    attention = np.random.default_rng(1).uniform(0, 1, (3, 4, 1)).astype("float32")
    ax = overlay_attention(image, attention)
    shown_image, shown_map = ax.get_images()
    np.testing.assert_array_equal(shown_image.get_array(), image)
    np.testing.assert_array_equal(shown_map.get_array(), attention[..., 0])
    assert shown_map.get_extent() == shown_image.get_extent()
    assert shown_map.get_clim() == (0.0, 1.0)
    plt.close(ax.figure)
    message = r"`attention` must be a spatial map .* got shape \(2, 3, 4\)"
    with pytest.raises(ValueError, match=message):
        overlay_attention(image, np.zeros((2, 3, 4)))
