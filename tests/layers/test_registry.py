"""keras_attn.get_attention and the public names."""

import pytest

import keras_attn
from keras_attn import BAM, CBAM, ECA, SelectiveKernel, SqueezeExcite, get_attention
from keras_attn.registry import ATTENTION_NAMES


@pytest.mark.parametrize(
    "name, cls",
    [
        ("cbam", CBAM),
        ("bam", BAM),
        ("se", SqueezeExcite),
        ("sk", SelectiveKernel),
        ("eca", ECA),
        ("CBAM", CBAM),
    ],
)
def test_get_attention(name, cls):
    assert get_attention(name) is cls


def test_get_attention_none():
    assert get_attention(None) is None


def test_get_attention_unknown_lists_names():
    message = r"`name` must be one of \('cbam', 'bam', 'se', 'sk', 'eca'\) or None; got 'senet'"
    with pytest.raises(ValueError, match=message):
        get_attention("senet")


def test_get_attention_not_a_string():
    with pytest.raises(TypeError, match=r"`name` must be a string or None; got 3"):
        get_attention(3)


def test_public_names():
    assert ATTENTION_NAMES == ("cbam", "bam", "se", "sk", "eca")
    for name in keras_attn.layers.__all__:
        assert getattr(keras_attn, name) is getattr(keras_attn.layers, name)
    assert isinstance(keras_attn.__version__, str)
