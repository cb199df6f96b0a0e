"""Bad arguments and inputs fail early with a ValueError naming the argument, the expectation and
what came."""

import re

import keras
import pytest

from keras_attn import (
    BAM,
    CBAM,
    ECA,
    BAMChannelGate,
    BAMSpatialGate,
    ChannelAttention,
    SelectiveKernel,
    SpatialAttention,
    SqueezeExcite,
)

WITH_REDUCTION_RATIO = [
    ChannelAttention,
    CBAM,
    BAMChannelGate,
    BAMSpatialGate,
    BAM,
    SqueezeExcite,
    SelectiveKernel,
]
ALL_LAYERS = WITH_REDUCTION_RATIO + [SpatialAttention, ECA]


@pytest.mark.parametrize("cls", WITH_REDUCTION_RATIO)
@pytest.mark.parametrize("value", [0, -4, 2.5, "16", True])
def test_reduction_ratio_must_be_a_positive_int(cls, value):
    with pytest.raises(ValueError, match=r"`reduction_ratio` must be a positive integer; got "):
        cls(reduction_ratio=value)


@pytest.mark.parametrize("cls", [SpatialAttention, CBAM, ECA])
@pytest.mark.parametrize("value", [4, 0, -3, 3.0])
def test_kernel_size_must_be_positive_and_odd(cls, value):
    message = rf"`kernel_size` must be a positive odd integer; got {value!r}"
    with pytest.raises(ValueError, match=message):
        cls(kernel_size=value)


@pytest.mark.parametrize("cls", [ChannelAttention, CBAM])
def test_unknown_pool_type(cls):
    message = r"`pool_types` entries must be in .*unknown: \('median',\)"
    with pytest.raises(ValueError, match=message):
        cls(pool_types=("avg", "median"))


@pytest.mark.parametrize("cls", [ChannelAttention, CBAM])
def test_empty_pool_types(cls):
    with pytest.raises(ValueError, match=r"`pool_types` must name at least one of .*; got \(\)"):
        cls(pool_types=())


def test_unknown_fusion():
    message = r"`fusion` must be one of \('sum', 'product'\); got 'mul'"
    with pytest.raises(ValueError, match=message):
        BAM(fusion="mul")


@pytest.mark.parametrize("cls", ALL_LAYERS)
def test_unknown_data_format(cls):
    with pytest.raises(ValueError, match=r"`data_format` must be one of .*; got 'NHWC'"):
        cls(data_format="NHWC")


@pytest.mark.parametrize("cls", [c for c in ALL_LAYERS if c is not SelectiveKernel])
@pytest.mark.parametrize("shape", [(2, 8), (2, 3, 3, 3, 3, 8)])
def test_input_rank_must_be_3_4_or_5(cls, shape):
    message = (
        r"`inputs` of \w+ must be 3-D \(batch, length, channels\) or 4-D \(batch, height, "
        r"width, channels\) or 5-D \(batch, depth, height, width, channels\) for "
        rf"data_format='channels_last'; got shape {re.escape(str(shape))} of rank {len(shape)}"
    )
    with pytest.raises(ValueError, match=message):
        cls().build(shape)


@pytest.mark.parametrize("shape", [(2, 5, 8), (2, 3, 3, 3, 8)])
def test_selective_kernel_input_rank_must_be_4(shape):
    message = rf"`inputs` of SelectiveKernel must be 4-D .*; got shape .* of rank {len(shape)}"
    with pytest.raises(ValueError, match=message):
        SelectiveKernel().build(shape)


@pytest.mark.parametrize("cls", [ChannelAttention, CBAM])
@pytest.mark.parametrize("value", [None, 3])
def test_pool_types_must_be_names(cls, value):
    message = rf"`pool_types` must be a pool name or a sequence of names from .*; got {value}"
    with pytest.raises(ValueError, match=message):
        cls(pool_types=value)


@pytest.mark.parametrize("cls", ALL_LAYERS)
def test_channels_must_be_known_at_build(cls):
    with pytest.raises(ValueError, match=r"channel dimension of the `inputs` of \w+ must be known"):
        cls()(keras.Input((None, None, None)))


def test_positive_int_arguments():
    for cls, name in [
        (BAMChannelGate, "num_layers"),
        (BAMSpatialGate, "dilation_rate"),
        (SelectiveKernel, "filters"),
        (SelectiveKernel, "min_units"),
        (SelectiveKernel, "groups"),
    ]:
        with pytest.raises(ValueError, match=rf"`{name}` must be a positive integer; got 0"):
            cls(**{name: 0})


def test_num_dilated_convs_must_be_non_negative():
    message = r"`num_dilated_convs` must be a non-negative integer; got -1"
    with pytest.raises(ValueError, match=message):
        BAMSpatialGate(num_dilated_convs=-1)


def test_groups_must_divide_channels():
    message = r"`groups` must divide both the input channels \(8\) and `filters` \(9\)"
    with pytest.raises(ValueError, match=message):
        SelectiveKernel(filters=9, groups=2).build((None, 5, 5, 8))


def test_eca_gamma_and_b():
    with pytest.raises(ValueError, match=r"`gamma` must be a positive number; got 0"):
        ECA(gamma=0)
    with pytest.raises(ValueError, match=r"`b` must be a number; got 'one'"):
        ECA(b="one")


def test_wrong_channel_count_after_build():
    layer = CBAM(reduction_ratio=2)
    layer.build((None, None, None, 8))
    with pytest.raises(ValueError, match=r"expected axis -1 of input shape to have value 8"):
        layer(keras.Input((None, None, 4)))
